//! OPEN bodies (through netgauze behind kube-gw's types): an error is a NOTIFICATION,
//! never a panic.
#![no_main]
use kube_gw::bgp::open;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = open::decode(data);
});
