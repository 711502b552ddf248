//! The start of a client's TLS stream, as TLS passthrough reads its SNI: a verdict (a name,
//! none, more bytes needed, or invalid), never a panic.
#![no_main]
use kube_gw::gateway::sni;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sni::parse(data);
});
