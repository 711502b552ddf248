//! The IPVS client: a generic-netlink socket that sends [`codec`] requests and reads the
//! replies. Blocking; the reconciler runs it off the async runtime. Everything it knows about
//! bytes is in the codec.

use std::net::IpAddr;

use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use super::codec::{self, DestInfo, Reply, Request, ServiceKey, ServiceSpec};

/// Requests per datagram: the kernel handles them one after the other and acknowledges each.
const BATCH: usize = 128;

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

/// Why the IPVS client failed.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error("cannot open a generic netlink socket: {0}; kube-gw needs CAP_NET_ADMIN")]
    Socket(#[source] std::io::Error),
    #[error("the kernel has no IPVS (generic netlink family \"IPVS\" not found); load it with `modprobe ip_vs ip_vs_sh ip_vs_mh` (the package lists them in /usr/lib/modules-load.d/kube-gw.conf)")]
    NoIpvs,
    #[error("netlink I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable netlink reply: {0}")]
    Decode(#[from] codec::DecodeError),
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Request { what: String, errno: i32 },
}

/// An open IPVS socket.
pub struct Client {
    sock: Socket,
    family: u16,
    seq: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens the socket and resolves the IPVS family.
    pub fn open() -> Result<Self, IpvsError> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        sock.bind_auto().map_err(IpvsError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(IpvsError::Socket)?;
        // Short acknowledgements: the kernel does not echo each request back.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_rx_buf_sz(4 << 20);
        let mut c = Client {
            sock,
            family: 0,
            seq: 0,
        };
        let seq = c.next_seq();
        c.sock.send(&codec::family_request(seq), 0)?;
        let mut family = None;
        c.read_until(seq, None, |r| {
            if let Reply::Family { id, .. } = r {
                family = Some(id);
            }
        })
        .map_err(|e| match e {
            IpvsError::Request { errno, .. } if errno == ENOENT => IpvsError::NoIpvs,
            e => e,
        })?;
        c.family = family.ok_or(IpvsError::NoIpvs)?;
        Ok(c)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Reads datagrams until the reply to `seq` is complete: its ack, its NLMSG_DONE, or
    /// (for a non-dump without ack) its single message.
    fn read_until(
        &mut self,
        seq: u32,
        dest_family: Option<IpAddr>,
        mut on: impl FnMut(Reply),
    ) -> Result<(), IpvsError> {
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let multi = codec::is_multi(&buf);
            let mut finished = false;
            for r in codec::decode(&buf, dest_family)? {
                match r {
                    Reply::Ack { seq: s, errno } if s == seq => {
                        if errno != 0 {
                            return Err(IpvsError::Request {
                                what: "IPVS request".into(),
                                errno,
                            });
                        }
                        finished = true;
                    }
                    Reply::Done { seq: s } if s == seq => finished = true,
                    other => {
                        let s = match &other {
                            Reply::Family { seq, .. }
                            | Reply::Service { seq, .. }
                            | Reply::Dest { seq, .. }
                            | Reply::Other { seq }
                            | Reply::Ack { seq, .. }
                            | Reply::Done { seq } => *seq,
                        };
                        if s == seq {
                            on(other);
                        }
                    }
                }
            }
            if finished || !multi {
                return Ok(());
            }
        }
    }

    /// Every service (firewall-mark services come back as `None`).
    pub fn services(&mut self) -> Result<Vec<ServiceSpec>, IpvsError> {
        let seq = self.next_seq();
        self.sock
            .send(&codec::encode(self.family, seq, &Request::DumpServices), 0)?;
        let mut out = Vec::new();
        self.read_until(seq, None, |r| {
            if let Reply::Service {
                service: Some(s), ..
            } = r
            {
                out.push(s);
            }
        })?;
        Ok(out)
    }

    /// The destinations of one service.
    pub fn dests(&mut self, key: &ServiceKey) -> Result<Vec<DestInfo>, IpvsError> {
        let seq = self.next_seq();
        self.sock.send(
            &codec::encode(self.family, seq, &Request::DumpDests(*key)),
            0,
        )?;
        let mut out = Vec::new();
        self.read_until(seq, Some(key.vip), |r| {
            if let Reply::Dest { dest: Some(d), .. } = r {
                out.push(d);
            }
        })
        .map_err(|e| match e {
            IpvsError::Request { errno, .. } => IpvsError::Request {
                what: format!("listing the destinations of {key}"),
                errno,
            },
            e => e,
        })?;
        Ok(out)
    }

    /// Sends the requests in batches and returns each one's outcome, in order. A request
    /// whose effect is already there (adding what exists, deleting what is gone) counts as
    /// done.
    pub fn apply(&mut self, reqs: &[Request]) -> Result<Vec<Result<(), i32>>, IpvsError> {
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(BATCH) {
            let mut buf = Vec::with_capacity(chunk.len() * 96);
            let first = self.seq.wrapping_add(1);
            let mut seqs = Vec::with_capacity(chunk.len());
            for r in chunk {
                let seq = self.next_seq();
                seqs.push(seq);
                buf.extend_from_slice(&codec::encode(self.family, seq, r));
            }
            self.sock.send(&buf, 0)?;
            let mut results: Vec<Option<i32>> = vec![None; chunk.len()];
            let mut left = chunk.len();
            while left > 0 {
                let (b, _) = self.sock.recv_from_full()?;
                for r in codec::decode(&b, None)? {
                    if let Reply::Ack { seq, errno } = r {
                        let i = usize::try_from(seq.wrapping_sub(first)).unwrap_or(usize::MAX);
                        if let Some(slot) = results.get_mut(i) {
                            if slot.is_none() && seqs.get(i) == Some(&seq) {
                                *slot = Some(errno);
                                left -= 1;
                            }
                        }
                    }
                }
            }
            for (r, errno) in chunk.iter().zip(results) {
                let errno = errno.unwrap_or(0);
                let done = errno == 0
                    || (errno == EEXIST
                        && matches!(r, Request::NewService(_) | Request::NewDest(..)))
                    || ((errno == ENOENT || errno == ESRCH)
                        && matches!(r, Request::DelService(_) | Request::DelDest(..)));
                out.push(if done { Ok(()) } else { Err(errno) });
            }
        }
        Ok(out)
    }
}
