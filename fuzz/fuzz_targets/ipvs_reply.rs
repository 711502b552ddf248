//! IPVS generic-netlink replies from the kernel: decode never panics.
#![no_main]
use kube_gw::ipvs::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode(data, None);
    let _ = codec::is_multi(data);
});
