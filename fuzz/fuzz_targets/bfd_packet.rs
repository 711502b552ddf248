//! BFD Control packets (RFC 5880 §4.1) from any UDP sender: a packet is taken or discarded
//! with a reason, never a panic; one that is taken encodes back to the same packet.
#![no_main]
use kube_gw::bfd::packet::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let again = Packet::decode(&p.encode()).expect("an encoded packet decodes");
        assert_eq!(again, p);
    }
});
