//! The socket options kube-gw's BGP sessions need and no safe wrapper offers:
//!
//! - TCP MD5 signatures (RFC 2385) through `TCP_MD5SIG_EXT`. Its interface index names a VRF
//!   (an L3 master device): the kernel refuses any other interface with EINVAL, so a
//!   link-local peer's key is set by address alone (measured on Linux 6.x);
//! - GTSM (RFC 5082): the lowest TTL / hop limit accepted on a socket (`IP_MINTTL`,
//!   `IPV6_MINHOPCOUNT`), and the TTL of an accepted connection's SYN (`TCP_SAVE_SYN` on the
//!   listener, `TCP_SAVED_SYN` on the connection), so a listener shared with other
//!   neighbors can refuse a GTSM neighbor's connection that came from too far before any of
//!   its data is read.
//!
//! And for the gateway's kernel TLS: a `close_notify` alert sent as a TLS record by the kernel
//! (`sendmsg(2)` with the `TLS_SET_RECORD_TYPE` control message), so a connection the kernel
//! encrypts ends as TLS says it should.
//!
//! And for restarts without refused connections: the listening sockets systemd hands over
//! (socket activation, `LISTEN_FDS`), taken as owned descriptors once.
//!
//! This crate holds the only `unsafe` code of kube-gw: a `setsockopt(2)`, a `getsockopt(2)`
//! and a `sendmsg(2)` call, and the `fstat(2)`, `fcntl(2)` and ownership of the descriptors
//! systemd passed, each on a borrowed descriptor with pointers and lengths of
//! buffers that live across the call. The daemon crate keeps `unsafe_code = "forbid"`. Everything
//! else (building the kernel's `struct tcp_md5sig` byte by byte, reading the TTL out of the
//! saved headers) is safe code and unit-tested.
//!
//! Inputs: a socket (any `AsFd`: a tokio `TcpSocket` or `TcpListener`, a std socket), the
//! peer's address, the key bytes. Outputs: `io::Result<()>` with the kernel's errno; the key
//! is never printed by this crate.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

/// Longest key the kernel accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `TCP_MD5SIG_FLAG_IFINDEX`: the key applies to the peer on this interface only.
const FLAG_IFINDEX: u8 = 0x2;

/// Size of the kernel's `struct tcp_md5sig`: a 128-byte `sockaddr_storage`, flags, prefix
/// length, key length (u16), interface index (i32), the key.
const MD5SIG_LEN: usize = 128 + 1 + 1 + 2 + 4 + MAX_KEY_LEN;

/// What can be wrong with a key before the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => f.write_str("the TCP MD5 password is empty"),
            KeyError::TooLong(n) => write!(
                f,
                "the TCP MD5 password is {n} bytes; the kernel takes at most {MAX_KEY_LEN}"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// The kernel's `struct tcp_md5sig` for `peer` (the port is ignored by the kernel), as
/// bytes in native layout. An empty key removes the peer's key.
pub fn md5sig(peer: IpAddr, key: &[u8], ifindex: Option<u32>) -> Result<Vec<u8>, KeyError> {
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    let mut b = vec![0u8; MD5SIG_LEN];
    match peer {
        IpAddr::V4(a) => {
            // struct sockaddr_in: family, port, address.
            b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            // struct sockaddr_in6: family, port, flow info, address, scope.
            b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.octets());
        }
    }
    if let Some(i) = ifindex {
        b[128] = FLAG_IFINDEX;
        b[132..136].copy_from_slice(&(i as i32).to_ne_bytes());
    }
    // Key length (u16) at 130: two bytes after flags and prefix length.
    b[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    b[136..136 + key.len()].copy_from_slice(key);
    Ok(b)
}

/// Sets (or, with an empty key, removes) the TCP MD5 key for `peer` on `sock`: before
/// `connect` for an active session, on the listener for a passive one.
pub fn set_md5(sock: &impl AsFd, peer: IpAddr, key: &[u8], ifindex: Option<u32>) -> io::Result<()> {
    let value =
        md5sig(peer, key, ifindex).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    setsockopt(sock, libc::IPPROTO_TCP, libc::TCP_MD5SIG_EXT, &value)
}

/// GTSM: refuse packets whose TTL (IPv4) or hop limit (IPv6) is below `min`. For a directly
/// connected peer that sends with 255, `min` is 255. (Sending with 255 is the safe
/// `set_ttl_v4` / `set_unicast_hops_v6`.)
pub fn set_min_ttl(sock: &impl AsFd, family: SocketAddr, min: u8) -> io::Result<()> {
    let v = i32::from(min).to_ne_bytes();
    match family {
        SocketAddr::V4(_) => setsockopt(sock, libc::IPPROTO_IP, libc::IP_MINTTL, &v),
        SocketAddr::V6(_) => setsockopt(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &v),
    }
}

/// Keep the SYN's headers of every connection this listener accepts (`TCP_SAVE_SYN`), for
/// [`saved_syn_ttl`].
pub fn save_syn(listener: &impl AsFd) -> io::Result<()> {
    setsockopt(
        listener,
        libc::IPPROTO_TCP,
        libc::TCP_SAVE_SYN,
        &1i32.to_ne_bytes(),
    )
}

/// The TTL (IPv4) or hop limit (IPv6) the SYN of an accepted connection arrived with, from
/// the headers its listener saved ([`save_syn`]). The kernel hands them out once.
pub fn saved_syn_ttl(conn: &impl AsFd) -> io::Result<u8> {
    let mut buf = [0u8; 512];
    let n = getsockopt(conn, libc::IPPROTO_TCP, libc::TCP_SAVED_SYN, &mut buf)?;
    ttl_of(&buf[..n]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no saved SYN (was TCP_SAVE_SYN set on the listener?)",
        )
    })
}

/// The TTL / hop limit of an IP packet's header: byte 8 of IPv4, byte 7 of IPv6.
pub fn ttl_of(ip_header: &[u8]) -> Option<u8> {
    match ip_header.first()? >> 4 {
        4 => ip_header.get(8).copied(),
        6 => ip_header.get(7).copied(),
        _ => None,
    }
}

/// `TLS_SET_RECORD_TYPE` of `SOL_TLS` (linux/tls.h) and the TLS record type of an alert.
const TLS_SET_RECORD_TYPE: i32 = 1;
const RECORD_TYPE_ALERT: u8 = 21;

/// The control message `TLS_SET_RECORD_TYPE` with one byte of data, laid out as
/// `CMSG_SPACE(1)`: the header, then the data, padded to the header's alignment.
#[repr(C)]
struct RecordTypeCmsg {
    hdr: libc::cmsghdr,
    data: [u8; 8],
}

/// Sends a TLS `close_notify` alert (level warning) on a socket whose transmit side is kernel
/// TLS (`TLS_TX` set): the kernel seals it as one alert record. Only for such sockets: plain
/// TCP ignores the control message and would send the two bytes as data. Fails with the
/// kernel's errno (`EAGAIN` when the send buffer is full: the caller closes anyway).
pub fn send_tls_close_notify(sock: &impl AsFd) -> io::Result<()> {
    // AlertLevel warning (1), AlertDescription close_notify (0).
    let payload = [1u8, 0u8];
    let mut cmsg = RecordTypeCmsg {
        hdr: libc::cmsghdr {
            cmsg_len: std::mem::size_of::<libc::cmsghdr>() + 1,
            cmsg_level: libc::SOL_TLS,
            cmsg_type: TLS_SET_RECORD_TYPE,
        },
        data: [RECORD_TYPE_ALERT, 0, 0, 0, 0, 0, 0, 0],
    };
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast::<libc::c_void>(),
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero `msghdr` is a valid value (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut RecordTypeCmsg).cast::<libc::c_void>();
    msg.msg_controllen = std::mem::size_of::<RecordTypeCmsg>();
    let fd = sock.as_fd();
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call; `msg` points at
    // `iov` (one buffer of `payload.len()` bytes) and at `cmsg` (`msg_controllen` bytes, a
    // well-formed control message), all live across the call and only read by the kernel.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if r >= 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt(sock: &impl AsFd, level: i32, name: i32, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_fd();
    let mut len = libc::socklen_t::try_from(buf.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option buffer too long"))?;
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call; `buf` is a live,
    // writable slice of `len` bytes, and the kernel writes at most `len` bytes into it and
    // the length it wrote into `len`, which also lives across the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(usize::try_from(len).unwrap_or(0).min(buf.len()))
    } else {
        Err(io::Error::last_os_error())
    }
}

fn setsockopt(sock: &impl AsFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let fd = sock.as_fd();
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option value too long"))?;
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call; `value` is a live
    // slice of `len` bytes that the kernel only reads (it copies it before returning).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast::<libc::c_void>(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The descriptors systemd passed to this process (`LISTEN_FDS` from 3 on, for `LISTEN_PID`
/// = this process), each with its name from `LISTEN_FDNAMES` ("" when unnamed). Taken once:
/// a second call returns nothing, so no descriptor gets two owners. Descriptors that are not
/// open sockets are left alone; the others are made close-on-exec. Call it first thing at
/// start, before anything else opens descriptors.
pub fn listen_fds() -> Vec<(String, std::os::fd::OwnedFd)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Vec::new();
    }
    let pid_ok =
        std::env::var("LISTEN_PID").is_ok_and(|p| p.trim() == std::process::id().to_string());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    if !pid_ok || n <= 0 {
        return Vec::new();
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let mut out = Vec::new();
    for (i, fd) in (3..3 + n).enumerate() {
        // SAFETY: fstat on a descriptor number only reads its metadata into `st`, which lives
        // across the call; an unused number fails with EBADF.
        let is_socket = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
        };
        if !is_socket {
            continue;
        }
        // SAFETY: fcntl on an open descriptor (checked above) with an integer argument; no
        // memory is passed. Close-on-exec: the tools kube-gw runs do not inherit the sockets.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        // SAFETY: systemd opened `fd` for this process (LISTEN_PID matched), it is an open
        // socket (checked above), and TAKEN makes this the only place that takes ownership.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        out.push((names.get(i).copied().unwrap_or("").to_string(), owned));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

    #[test]
    fn the_record_type_message_is_cmsg_space_of_one_byte() {
        // CMSG_SPACE(1) and CMSG_LEN(1) as the C macros compute them.
        // SAFETY: pure arithmetic on a length.
        let (space, len) = unsafe { (libc::CMSG_SPACE(1), libc::CMSG_LEN(1)) };
        assert_eq!(std::mem::size_of::<RecordTypeCmsg>(), space as usize);
        assert_eq!(std::mem::size_of::<libc::cmsghdr>() + 1, len as usize);
    }

    #[test]
    fn the_md5sig_layout_matches_the_kernel_header() {
        let b = md5sig(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), b"secret", None).unwrap();
        assert_eq!(b.len(), 216, "sizeof(struct tcp_md5sig) on Linux");
        assert_eq!(&b[0..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&b[4..8], &[192, 0, 2, 1]);
        assert_eq!(b[128], 0, "no flags without an interface");
        assert_eq!(&b[130..132], &6u16.to_ne_bytes());
        assert_eq!(&b[136..142], b"secret");
        assert!(b[142..].iter().all(|x| *x == 0));
    }

    #[test]
    fn a_link_local_peer_is_keyed_with_its_interface() {
        let a: Ipv6Addr = "fe80::1".parse().unwrap();
        let b = md5sig(IpAddr::V6(a), b"k", Some(7)).unwrap();
        assert_eq!(&b[0..2], &(libc::AF_INET6 as u16).to_ne_bytes());
        assert_eq!(&b[8..24], &a.octets());
        assert_eq!(b[128], FLAG_IFINDEX);
        assert_eq!(&b[132..136], &7i32.to_ne_bytes());
    }

    #[test]
    fn a_key_longer_than_the_kernel_takes_is_refused_before_the_call() {
        let long = [b'x'; 81];
        assert_eq!(
            md5sig(IpAddr::V4(Ipv4Addr::LOCALHOST), &long, None),
            Err(KeyError::TooLong(81))
        );
    }

    #[test]
    fn a_saved_syn_tells_the_ttl_it_arrived_with() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        save_syn(&l).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        // The SYN went out with the default TTL; over loopback it arrives unchanged.
        let default: u8 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_default_ttl")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert_eq!(saved_syn_ttl(&accepted).unwrap(), default);
        // Handed out once.
        assert!(saved_syn_ttl(&accepted).is_err());
        assert_eq!(ttl_of(&[0x45, 0, 0, 0, 0, 0, 0, 0, 253]), Some(253));
        assert_eq!(ttl_of(&[0x60, 0, 0, 0, 0, 0, 0, 254]), Some(254));
        assert_eq!(ttl_of(&[0x10]), None);
    }

    #[test]
    fn the_kernel_accepts_the_options_on_a_real_socket() {
        // Needs a kernel with CONFIG_TCP_MD5SIG (Debian's has it); no privileges needed.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        set_md5(&l, peer, b"secret", None).unwrap();
        set_md5(&l, peer, b"", None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        set_min_ttl(&l, any, 255).unwrap();
    }
}
