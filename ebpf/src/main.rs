//! `steer`: the gateway's eBPF `sk_lookup` program.
//!
//! Role: when a TCP SYN (or any socket lookup) arrives for a local address, the kernel runs this
//! program before its own listener lookup. If {destination address, port, protocol} is a gateway
//! listener, the program hands the packet to the gateway's one listening socket for that address
//! family, which then sees the original VIP:port through `getsockname`. Anything else falls
//! through to the kernel's normal lookup untouched.
//!
//! Inputs (maps, written only by the daemon's `gateway::steer`):
//! - `KG_LISTENERS`: key = 20 bytes (IPv6 address, IPv4 as `::ffff:a.b.c.d`; port, big-endian;
//!   protocol; 0), value = the slot in `KG_SOCKETS` to steer to.
//! - `KG_SOCKETS`: a SOCKMAP: slot 0 holds the IPv4 listener, slot 1 the IPv6 listener.
//!
//! Output: `SK_PASS` with a socket assigned, or `SK_PASS` without (not ours, or no socket in the
//! slot yet: the kernel's own lookup answers, so a missing listener is an ordinary RST).
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, sk_lookup},
    maps::{HashMap, SockMap},
    programs::SkLookupContext,
};

/// The map layout is shared with `src/gateway/steer.rs`; the key length is checked there.
pub const KEY_LEN: usize = 20;
const AF_INET: u32 = 2;
const SK_PASS: u32 = 1;

#[map(name = "KG_LISTENERS")]
static LISTENERS: HashMap<[u8; KEY_LEN], u32> = HashMap::with_max_entries(65_536, 0);

#[map(name = "KG_SOCKETS")]
static SOCKETS: SockMap = SockMap::with_max_entries(2, 0);

#[sk_lookup]
pub fn steer(ctx: SkLookupContext) -> u32 {
    // SAFETY: the kernel passes a valid `bpf_sk_lookup` context; these are plain field reads
    // the verifier checks.
    let (family, protocol, ip4, ip6, port) = unsafe {
        let l = &*ctx.lookup;
        (l.family, l.protocol, l.local_ip4, l.local_ip6, l.local_port)
    };
    let mut key = [0u8; KEY_LEN];
    if family == AF_INET {
        key[10] = 0xff;
        key[11] = 0xff;
        // local_ip4 is in network byte order: its bytes in memory are the address's bytes.
        let b = ip4.to_ne_bytes();
        key[12] = b[0];
        key[13] = b[1];
        key[14] = b[2];
        key[15] = b[3];
    } else {
        let mut i = 0;
        while i < 4 {
            let b = ip6[i].to_ne_bytes();
            key[i * 4] = b[0];
            key[i * 4 + 1] = b[1];
            key[i * 4 + 2] = b[2];
            key[i * 4 + 3] = b[3];
            i += 1;
        }
    }
    // local_port is in host byte order.
    let p = (port as u16).to_be_bytes();
    key[16] = p[0];
    key[17] = p[1];
    key[18] = protocol as u8;
    // SAFETY: a map lookup by value; the value is copied out at once.
    let slot = match unsafe { LISTENERS.get(&key) } {
        Some(slot) => *slot,
        None => return SK_PASS,
    };
    // An error (no socket in the slot, or a family mismatch) leaves the kernel's lookup to answer.
    let _ = SOCKETS.redirect_sk_lookup(&ctx, slot, 0);
    SK_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
