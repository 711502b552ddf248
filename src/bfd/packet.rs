//! BFD Control packets (RFC 5880 §4.1): the 24-byte mandatory section, encoded and decoded
//! with the reception checks of §6.8.6 that need nothing but the packet. Pure.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |   (microseconds)
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! ```
//!
//! Authentication (the A bit) is not implemented: a packet that asks for it is discarded,
//! as RFC 5880 requires of a session without authentication.

/// Length of a packet without authentication.
pub const LEN: usize = 24;

/// Session states (RFC 5880 §4.1, values on the wire).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// Diagnostic codes (RFC 5880 §4.1): why the session last left Up.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// A code this implementation does not know (carried and shown).
    Other(u8),
}

impl Diag {
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> Self {
        match c {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            c => Diag::Other(c),
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Other(c) => return write!(f, "diagnostic {c}"),
        };
        f.write_str(s)
    }
}

/// A BFD Control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub diag: Diag,
    pub state: State,
    /// Poll: the sender asks for a packet with Final.
    pub poll: bool,
    /// Final: the answer to a Poll.
    pub final_: bool,
    /// Control Plane Independent: the sender's BFD survives its control plane restarting
    /// (RFC 5880 §4.1; RFC 5882 §4.3 for graceful restart).
    pub cpi: bool,
    /// Demand mode (not used by kube-gw; carried).
    pub demand: bool,
    pub detect_mult: u8,
    pub my_disc: u32,
    pub your_disc: u32,
    /// Microseconds.
    pub desired_min_tx: u32,
    /// Microseconds.
    pub required_min_rx: u32,
    /// Microseconds; 0: no Echo packets (kube-gw does not use the Echo function).
    pub required_min_echo_rx: u32,
}

/// Why a received packet was discarded (RFC 5880 §6.8.6), for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("shorter than a BFD Control packet ({0} bytes)")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("length field {field} does not fit the packet ({len} bytes)")]
    Length { field: u8, len: usize },
    #[error("detect multiplier 0")]
    DetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("both Poll and Final set")]
    PollAndFinal,
    #[error("my discriminator 0")]
    MyDiscriminator,
    #[error("your discriminator 0 in state {0:?}")]
    YourDiscriminator(State),
    #[error("authentication requested; not configured")]
    Authentication,
}

impl Packet {
    /// The packet on the wire.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag.code() & 0x1f);
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_disc.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_disc.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }

    /// Reads a packet, with every check of RFC 5880 §6.8.6 that needs only the packet.
    pub fn decode(b: &[u8]) -> Result<Self, Discard> {
        if b.len() < LEN {
            return Err(Discard::Short(b.len()));
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(Discard::Version(version));
        }
        let auth = b[1] & 0x04 != 0;
        let field = b[3];
        let min = if auth { LEN + 2 } else { LEN };
        if usize::from(field) < min || usize::from(field) > b.len() {
            return Err(Discard::Length {
                field,
                len: b.len(),
            });
        }
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let p = Packet {
            diag: Diag::from_code(b[0] & 0x1f),
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            final_: b[1] & 0x10 != 0,
            cpi: b[1] & 0x08 != 0,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_disc: u32_at(4),
            your_disc: u32_at(8),
            desired_min_tx: u32_at(12),
            required_min_rx: u32_at(16),
            required_min_echo_rx: u32_at(20),
        };
        if p.detect_mult == 0 {
            return Err(Discard::DetectMult);
        }
        if b[1] & 0x01 != 0 {
            return Err(Discard::Multipoint);
        }
        if p.poll && p.final_ {
            return Err(Discard::PollAndFinal);
        }
        if p.my_disc == 0 {
            return Err(Discard::MyDiscriminator);
        }
        if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Discard::YourDiscriminator(p.state));
        }
        if auth {
            return Err(Discard::Authentication);
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up() -> Packet {
        Packet {
            diag: Diag::None,
            state: State::Up,
            poll: false,
            final_: false,
            cpi: true,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 0x0a0b_0c0d,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    /// A packet as FRR's bfdd sends it in Up (bytes taken apart by hand from RFC 5880 §4.1):
    /// version 1, diag 0, state Up, C set, detect multiplier 3, length 24, 300 ms both ways.
    #[test]
    fn the_bytes_are_those_of_rfc_5880() {
        let b = up().encode();
        assert_eq!(
            b,
            [
                0x20, 0xc8, 3, 24, 1, 2, 3, 4, 10, 11, 12, 13, 0, 4, 0x93, 0xe0, 0, 4, 0x93, 0xe0,
                0, 0, 0, 0
            ]
        );
        assert_eq!(Packet::decode(&b), Ok(up()));
        // Down with a diagnostic, your discriminator 0 (allowed in Down), Poll set.
        let down = Packet {
            diag: Diag::ControlDetectionTimeExpired,
            state: State::Down,
            poll: true,
            your_disc: 0,
            cpi: false,
            ..up()
        };
        let b = down.encode();
        assert_eq!((b[0], b[1]), (0x21, 0x60));
        assert_eq!(Packet::decode(&b), Ok(down));
    }

    #[test]
    fn packets_rfc_5880_says_to_discard_are_discarded_with_the_reason() {
        let good = up().encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b
        };
        let cases: Vec<([u8; LEN], Discard)> = vec![
            (with(0, 0x40), Discard::Version(2)),
            (with(3, 23), Discard::Length { field: 23, len: 24 }),
            (with(3, 30), Discard::Length { field: 30, len: 24 }),
            (with(2, 0), Discard::DetectMult),
            (with(1, 0xc9), Discard::Multipoint),
            (with(1, 0xf8), Discard::PollAndFinal),
            (
                {
                    let mut b = good;
                    b[4..8].copy_from_slice(&[0; 4]);
                    b
                },
                Discard::MyDiscriminator,
            ),
            (
                {
                    let mut b = good;
                    b[8..12].copy_from_slice(&[0; 4]);
                    b
                },
                Discard::YourDiscriminator(State::Up),
            ),
        ];
        for (b, want) in cases {
            assert_eq!(Packet::decode(&b), Err(want), "{b:02x?}");
        }
        assert_eq!(Packet::decode(&good[..20]), Err(Discard::Short(20)));
        // Authentication asked for: 26 bytes at least, and discarded since none is set up.
        let mut auth = good.to_vec();
        auth[1] |= 0x04;
        auth[3] = 26;
        auth.extend([1, 2]);
        assert_eq!(Packet::decode(&auth), Err(Discard::Authentication));
        // Extra bytes past the length field are ignored.
        let mut long = good.to_vec();
        long.extend([9, 9]);
        assert_eq!(Packet::decode(&long), Ok(up()));
    }
}
