//! BGP on the wire, the part kube-gw owns itself: message framing (RFC 4271 §4.1) and the
//! NOTIFICATION message (RFC 4271 §4.5, with RFC 4486 Cease subcodes, RFC 6608 FSM errors,
//! RFC 7313 ROUTE-REFRESH errors, RFC 8538 Hard Reset, RFC 9003 shutdown communication and
//! RFC 9687 Send Hold Timer Expired). Pure: bytes in, values out, no I/O.
//!
//! OPEN, UPDATE and ROUTE-REFRESH bodies are decoded elsewhere (netgauze, behind our types);
//! this module hands them over as a type and a body once the header is known to be sane.
//!
//! ```text
//!  TCP bytes ──► Framer::next_frame() ──► Ok(Frame { kind, body })   (one whole message)
//!                                └─► Err(Notification)          (send it, close the session)
//! ```

use std::fmt;

/// Header: 16-byte marker, 2-byte length, 1-byte type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271's maximum message size (RFC 8654 extended messages are not negotiated).
pub const MAX_LEN: usize = 4096;

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Update,
    Notification,
    Keepalive,
    RouteRefresh,
}

impl Kind {
    /// The type of a type octet, if it is one.
    pub fn from_code(t: u8) -> Option<Self> {
        Some(match t {
            1 => Self::Open,
            2 => Self::Update,
            3 => Self::Notification,
            4 => Self::Keepalive,
            5 => Self::RouteRefresh,
            _ => return None,
        })
    }

    /// The type octet.
    pub fn code(self) -> u8 {
        match self {
            Self::Open => 1,
            Self::Update => 2,
            Self::Notification => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh => 5,
        }
    }

    /// Whether `len` (header included) is possible for this type (RFC 4271 §6.1, RFC 2918).
    fn length_ok(self, len: usize) -> bool {
        match self {
            Self::Open => len >= 29,
            Self::Update => len >= 23,
            Self::Notification => len >= 21,
            Self::Keepalive => len == HEADER_LEN,
            Self::RouteRefresh => len >= 23,
        }
    }
}

/// One whole message: its type and the bytes after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub body: Vec<u8>,
}

/// Frames a message: header plus `body`. Errs when the result would exceed [`MAX_LEN`].
pub fn frame(kind: Kind, body: &[u8]) -> Result<Vec<u8>, TooLong> {
    let len = HEADER_LEN + body.len();
    if len > MAX_LEN {
        return Err(TooLong(len));
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.push(kind.code());
    out.extend_from_slice(body);
    Ok(out)
}

/// A message that would be longer than BGP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a BGP message of {0} bytes exceeds the maximum of 4096")]
pub struct TooLong(pub usize);

/// Cuts a byte stream into messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed, or the NOTIFICATION the
    /// RFC prescribes for a bad header (the session must then close). Checks the header as
    /// soon as it is complete, before waiting for the body.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Notification> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if self.buf[..16].iter().any(|b| *b != 0xff) {
            return Err(Notification::new(Code::MessageHeader, 1, Vec::new()));
        }
        let len = usize::from(u16::from_be_bytes([self.buf[16], self.buf[17]]));
        let t = self.buf[18];
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            return Err(Notification::new(
                Code::MessageHeader,
                2,
                self.buf[16..18].to_vec(),
            ));
        }
        let Some(kind) = Kind::from_code(t) else {
            return Err(Notification::new(Code::MessageHeader, 3, vec![t]));
        };
        if !kind.length_ok(len) {
            return Err(Notification::new(
                Code::MessageHeader,
                2,
                self.buf[16..18].to_vec(),
            ));
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..len].to_vec();
        self.buf.drain(..len);
        Ok(Some(Frame { kind, body }))
    }

    /// Bytes held that are not yet a whole message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// A ROUTE-REFRESH message (RFC 2918) with its RFC 7313 subtype: 0 asks for the routes of
/// one AFI/SAFI again, 1 and 2 (BoRR, EoRR) bracket such a re-advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefresh {
    pub const REQUEST: u8 = 0;
    pub const BEGIN: u8 = 1;
    pub const END: u8 = 2;

    /// Reads a body (the framer guarantees at least 4 bytes). A BoRR or EoRR of another
    /// length is ROUTE-REFRESH Message Error / Invalid Message Length with the whole
    /// message as data (RFC 7313 §5).
    pub fn decode(body: &[u8]) -> Result<Self, Notification> {
        let [a0, a1, subtype, safi, ..] = *body else {
            return Err(Notification::new(Code::MessageHeader, 2, Vec::new()));
        };
        if matches!(subtype, Self::BEGIN | Self::END) && body.len() != 4 {
            let whole = frame(Kind::RouteRefresh, body).unwrap_or_default();
            return Err(Notification::new(Code::RouteRefresh, 1, whole));
        }
        Ok(Self {
            afi: u16::from_be_bytes([a0, a1]),
            subtype,
            safi,
        })
    }

    /// The framed message.
    pub fn encode(&self) -> Vec<u8> {
        let [a0, a1] = self.afi.to_be_bytes();
        frame(Kind::RouteRefresh, &[a0, a1, self.subtype, self.safi]).unwrap_or_default()
    }
}

/// NOTIFICATION error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    MessageHeader,
    Open,
    Update,
    HoldTimerExpired,
    Fsm,
    Cease,
    RouteRefresh,
    SendHoldTimerExpired,
    /// A code this implementation does not know (still carried and shown).
    Other(u8),
}

impl Code {
    pub fn from_u8(c: u8) -> Self {
        match c {
            1 => Self::MessageHeader,
            2 => Self::Open,
            3 => Self::Update,
            4 => Self::HoldTimerExpired,
            5 => Self::Fsm,
            6 => Self::Cease,
            7 => Self::RouteRefresh,
            8 => Self::SendHoldTimerExpired,
            c => Self::Other(c),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::MessageHeader => 1,
            Self::Open => 2,
            Self::Update => 3,
            Self::HoldTimerExpired => 4,
            Self::Fsm => 5,
            Self::Cease => 6,
            Self::RouteRefresh => 7,
            Self::SendHoldTimerExpired => 8,
            Self::Other(c) => c,
        }
    }

    /// The code's name as the RFCs write it (also the metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Self::MessageHeader => "Message Header Error",
            Self::Open => "OPEN Message Error",
            Self::Update => "UPDATE Message Error",
            Self::HoldTimerExpired => "Hold Timer Expired",
            Self::Fsm => "Finite State Machine Error",
            Self::Cease => "Cease",
            Self::RouteRefresh => "ROUTE-REFRESH Message Error",
            Self::SendHoldTimerExpired => "Send Hold Timer Expired",
            Self::Other(_) => "unknown error code",
        }
    }
}

/// Cease subcodes that carry an RFC 9003 shutdown communication.
const CEASE_ADMIN_SHUTDOWN: u8 = 2;
const CEASE_ADMIN_RESET: u8 = 4;
/// Cease subcode Hard Reset (RFC 8538).
const CEASE_HARD_RESET: u8 = 9;
/// RFC 9003: at most 255 octets of UTF-8.
const MAX_SHUTDOWN_TEXT: usize = 255;

/// A NOTIFICATION: code, subcode, data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: Code,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: Code, subcode: u8, data: Vec<u8>) -> Self {
        Self {
            code,
            subcode,
            data,
        }
    }

    /// Cease with a subcode and an RFC 9003 shutdown communication where the subcode has
    /// one (Administrative Shutdown, Administrative Reset); the text is cut at a character
    /// boundary to 255 octets.
    pub fn cease(subcode: u8, text: &str) -> Self {
        let data = if matches!(subcode, CEASE_ADMIN_SHUTDOWN | CEASE_ADMIN_RESET) {
            let mut end = text.len().min(MAX_SHUTDOWN_TEXT);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mut d = Vec::with_capacity(end + 1);
            d.push(u8::try_from(end).unwrap_or(u8::MAX));
            d.extend_from_slice(&text.as_bytes()[..end]);
            d
        } else {
            Vec::new()
        };
        Self::new(Code::Cease, subcode, data)
    }

    /// RFC 8538 §3.1: this NOTIFICATION inside a Cease / Hard Reset (subcode 9), whose data
    /// is the original code, subcode and data. Sent, once both sides set the N bit, where
    /// the session must end without graceful restart (§5.1: Maximum Number of Prefixes,
    /// Administrative Shutdown, Peer De-configured, BFD Down); anything else is unchanged.
    pub fn hard_reset(self) -> Self {
        if self.code != Code::Cease || !matches!(self.subcode, 1..=3 | 10) {
            return self;
        }
        Self::new(Code::Cease, CEASE_HARD_RESET, self.body())
    }

    /// A Cease / Hard Reset (RFC 8538): the peer does not keep our routes for a restart.
    pub fn is_hard_reset(&self) -> bool {
        self.code == Code::Cease && self.subcode == CEASE_HARD_RESET
    }

    /// The body (after the header).
    pub fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(2 + self.data.len());
        b.push(self.code.to_u8());
        b.push(self.subcode);
        b.extend_from_slice(&self.data);
        b
    }

    /// The whole message. Data that would make it exceed 4096 bytes is cut.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = self.body();
        body.truncate(MAX_LEN - HEADER_LEN);
        frame(Kind::Notification, &body).unwrap_or_default()
    }

    /// Reads a NOTIFICATION body. A body shorter than two octets is itself an error: the
    /// NOTIFICATION to answer with (Message Header Error / Bad Message Length).
    pub fn decode(body: &[u8]) -> Result<Self, Notification> {
        if body.len() < 2 {
            let len = u16::try_from(HEADER_LEN + body.len()).unwrap_or(u16::MAX);
            return Err(Notification::new(
                Code::MessageHeader,
                2,
                len.to_be_bytes().to_vec(),
            ));
        }
        Ok(Self::new(
            Code::from_u8(body[0]),
            body[1],
            body[2..].to_vec(),
        ))
    }

    /// The RFC 9003 shutdown communication, if this carries a valid one.
    pub fn shutdown_text(&self) -> Option<String> {
        if self.code != Code::Cease
            || !matches!(self.subcode, CEASE_ADMIN_SHUTDOWN | CEASE_ADMIN_RESET)
        {
            return None;
        }
        let (&n, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(n))?;
        std::str::from_utf8(text).ok().map(str::to_string)
    }

    /// The subcode's name, where the RFCs give one.
    pub fn subcode_name(&self) -> Option<&'static str> {
        Some(match (self.code, self.subcode) {
            (Code::MessageHeader, 1) => "Connection Not Synchronized",
            (Code::MessageHeader, 2) => "Bad Message Length",
            (Code::MessageHeader, 3) => "Bad Message Type",
            (Code::Open, 1) => "Unsupported Version Number",
            (Code::Open, 2) => "Bad Peer AS",
            (Code::Open, 3) => "Bad BGP Identifier",
            (Code::Open, 4) => "Unsupported Optional Parameter",
            (Code::Open, 6) => "Unacceptable Hold Time",
            (Code::Open, 7) => "Unsupported Capability",
            (Code::Open, 11) => "Role Mismatch",
            (Code::Update, 1) => "Malformed Attribute List",
            (Code::Update, 2) => "Unrecognized Well-known Attribute",
            (Code::Update, 3) => "Missing Well-known Attribute",
            (Code::Update, 4) => "Attribute Flags Error",
            (Code::Update, 5) => "Attribute Length Error",
            (Code::Update, 6) => "Invalid ORIGIN Attribute",
            (Code::Update, 8) => "Invalid NEXT_HOP Attribute",
            (Code::Update, 9) => "Optional Attribute Error",
            (Code::Update, 10) => "Invalid Network Field",
            (Code::Update, 11) => "Malformed AS_PATH",
            (Code::Fsm, 1) => "Receive Unexpected Message in OpenSent State",
            (Code::Fsm, 2) => "Receive Unexpected Message in OpenConfirm State",
            (Code::Fsm, 3) => "Receive Unexpected Message in Established State",
            (Code::Cease, 1) => "Maximum Number of Prefixes Reached",
            (Code::Cease, 2) => "Administrative Shutdown",
            (Code::Cease, 3) => "Peer De-configured",
            (Code::Cease, 4) => "Administrative Reset",
            (Code::Cease, 5) => "Connection Rejected",
            (Code::Cease, 6) => "Other Configuration Change",
            (Code::Cease, 7) => "Connection Collision Resolution",
            (Code::Cease, 8) => "Out of Resources",
            (Code::Cease, 9) => "Hard Reset",
            (Code::Cease, 10) => "BFD Down",
            (Code::RouteRefresh, 1) => "Invalid Message Length",
            _ => return None,
        })
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code.name(), self.code.to_u8())?;
        match self.subcode_name() {
            Some(s) => write!(f, " / {s} ({})", self.subcode)?,
            None => write!(f, " / subcode {}", self.subcode)?,
        }
        if let Some(t) = self.shutdown_text() {
            write!(f, ": \"{}\"", t.escape_debug())?;
        } else if !self.data.is_empty() {
            write!(f, ", data")?;
            for b in self.data.iter().take(16) {
                write!(f, " {b:02x}")?;
            }
            if self.data.len() > 16 {
                write!(f, " … ({} bytes)", self.data.len())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2918/7313 layout: AFI, subtype, SAFI; a BoRR of the wrong length is 7/1 with the
    /// whole message as data.
    #[test]
    fn route_refresh_messages() {
        let borr = RouteRefresh {
            afi: 2,
            subtype: RouteRefresh::BEGIN,
            safi: 1,
        };
        let bytes = borr.encode();
        assert_eq!(&bytes[16..], &[0, 23, 5, 0, 2, 1, 1]);
        assert_eq!(RouteRefresh::decode(&bytes[19..]), Ok(borr));
        let ask = RouteRefresh::decode(&[0, 1, 0, 1]).unwrap();
        assert_eq!(
            (ask.afi, ask.subtype, ask.safi),
            (1, RouteRefresh::REQUEST, 1)
        );
        let long = RouteRefresh::decode(&[0, 1, 2, 1, 9]).unwrap_err();
        assert_eq!((long.code, long.subcode), (Code::RouteRefresh, 1));
        assert_eq!(long.data.len(), 24);
        assert_eq!(long.data[18], 5);
    }

    fn header(len: u16, t: u8) -> Vec<u8> {
        let mut h = vec![0xff; 16];
        h.extend_from_slice(&len.to_be_bytes());
        h.push(t);
        h
    }

    #[test]
    fn a_keepalive_is_nineteen_bytes() {
        let k = frame(Kind::Keepalive, &[]).unwrap();
        assert_eq!(k, header(19, 4));
        let mut f = Framer::default();
        f.push(&k);
        assert_eq!(
            f.next_frame(),
            Ok(Some(Frame {
                kind: Kind::Keepalive,
                body: vec![]
            }))
        );
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn messages_split_and_joined_anywhere_come_out_whole() {
        let a = frame(Kind::Update, &[0, 0, 0, 0]).unwrap();
        let b = frame(Kind::Keepalive, &[]).unwrap();
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for cut in 0..=stream.len() {
            let mut f = Framer::default();
            let mut got = Vec::new();
            f.push(&stream[..cut]);
            while let Some(m) = f.next_frame().unwrap() {
                got.push(m.kind);
            }
            f.push(&stream[cut..]);
            while let Some(m) = f.next_frame().unwrap() {
                got.push(m.kind);
            }
            assert_eq!(got, vec![Kind::Update, Kind::Keepalive], "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
    }

    /// RFC 4271 §6.1: each header error and the NOTIFICATION it gets, with its data.
    #[test]
    fn header_errors_get_the_prescribed_notification() {
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            // Bad marker → 1/1 Connection Not Synchronized.
            (
                {
                    let mut h = header(19, 4);
                    h[3] = 0;
                    h
                },
                vec![1, 1],
            ),
            // Length below 19 → 1/2 with the length field.
            (header(18, 4), vec![1, 2, 0, 18]),
            // Length above 4096 → 1/2.
            (header(4097, 2), vec![1, 2, 0x10, 0x01]),
            // Unknown type → 1/3 with the type.
            (header(19, 9), vec![1, 3, 9]),
            // KEEPALIVE must be exactly 19; OPEN at least 29; UPDATE 23; NOTIFICATION 21.
            (header(20, 4), vec![1, 2, 0, 20]),
            (header(28, 1), vec![1, 2, 0, 28]),
            (header(22, 2), vec![1, 2, 0, 22]),
            (header(20, 3), vec![1, 2, 0, 20]),
        ];
        for (bytes, want) in cases {
            let mut f = Framer::default();
            f.push(&bytes);
            let n = f.next_frame().expect_err("a header error");
            assert_eq!(n.body(), want, "for header {bytes:02x?}");
        }
    }

    #[test]
    fn too_long_messages_are_refused_when_framed() {
        assert_eq!(frame(Kind::Update, &[0; 4077]).map(|v| v.len()), Ok(4096));
        assert_eq!(frame(Kind::Update, &[0; 4078]), Err(TooLong(4097)));
    }

    /// RFC 9003: Cease / Administrative Shutdown carries a length-prefixed UTF-8 text of at
    /// most 255 octets, cut at a character boundary.
    #[test]
    fn shutdown_communication_round_trips_and_is_cut_safely() {
        let n = Notification::cease(2, "maintenance: kube-gw drain");
        let bytes = n.encode();
        assert_eq!(&bytes[18..21], &[3, 6, 2]);
        assert_eq!(bytes[21], 26);
        let mut f = Framer::default();
        f.push(&bytes);
        let frame = f.next_frame().unwrap().unwrap();
        let back = Notification::decode(&frame.body).unwrap();
        assert_eq!(
            back.shutdown_text().as_deref(),
            Some("maintenance: kube-gw drain")
        );
        assert_eq!(
            back.to_string(),
            "Cease (6) / Administrative Shutdown (2): \"maintenance: kube-gw drain\""
        );
        let long = "é".repeat(200); // 400 octets
        let cut = Notification::cease(2, &long);
        assert_eq!(cut.data[0], 254, "127 whole characters");
        assert_eq!(cut.shutdown_text().unwrap().chars().count(), 127);
        // Other Cease subcodes carry no text.
        assert!(Notification::cease(7, "x").data.is_empty());
        // A length byte that lies gives no text, and no panic.
        let liar = Notification::new(Code::Cease, 2, vec![200, b'a']);
        assert_eq!(liar.shutdown_text(), None);
        assert!(liar.to_string().contains("data c8 61"));
    }

    /// An independent implementation's bytes (tests/golden/bgp/README.md): BIRD's OPEN and
    /// its Cease with a shutdown communication frame and decode, and kube-gw encodes the
    /// same NOTIFICATION byte for byte.
    #[test]
    fn bird_s_open_and_cease_frame_decode_and_re_encode_identically() {
        let capture = include_bytes!("../../tests/golden/bgp/bird-2.0.12-open-then-disable.bin");
        let mut f = Framer::default();
        f.push(capture);
        let open = f.next_frame().unwrap().unwrap();
        assert_eq!(open.kind, Kind::Open);
        assert_eq!(open.body.len(), 59 - HEADER_LEN);
        assert_eq!(open.body[0], 4, "version");
        let cease = f.next_frame().unwrap().unwrap();
        assert_eq!(cease.kind, Kind::Notification);
        let n = Notification::decode(&cease.body).unwrap();
        assert_eq!(n.code, Code::Cease);
        assert_eq!(n.subcode, 2);
        assert_eq!(n.shutdown_text().as_deref(), Some("kube-gw golden vector"));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.pending(), 0);
        assert_eq!(
            Notification::cease(2, "kube-gw golden vector").encode(),
            capture[59..].to_vec()
        );
    }

    #[test]
    fn every_code_is_named_and_unknown_ones_are_carried() {
        for c in 1..=8 {
            assert_eq!(Code::from_u8(c).to_u8(), c);
            assert_ne!(Code::from_u8(c).name(), "unknown error code");
        }
        let n = Notification::decode(&[8, 0]).unwrap();
        assert_eq!(n.to_string(), "Send Hold Timer Expired (8) / subcode 0");
        let odd = Notification::decode(&[42, 7, 1]).unwrap();
        assert_eq!(odd.code, Code::Other(42));
        assert_eq!(odd.body(), vec![42, 7, 1]);
        assert!(Notification::decode(&[6]).is_err());
    }
}
