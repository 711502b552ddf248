//! The BGP framer: any byte stream, fed in two pieces, gives frames or one NOTIFICATION,
//! never a panic, and never a frame longer than 4096 octets.
#![no_main]
use kube_gw::bgp::wire::Framer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut f = Framer::default();
    f.push(&data[..cut]);
    let mut pushed_rest = false;
    loop {
        match f.next_frame() {
            Ok(Some(frame)) => assert!(frame.body.len() <= 4096 - 19),
            Ok(None) if !pushed_rest => {
                f.push(&data[cut..]);
                pushed_rest = true;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
