//! NOTIFICATION bodies: decode never panics; what decodes encodes back to the same body.
#![no_main]
use kube_gw::bgp::wire::Notification;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Notification::decode(data) {
        assert_eq!(n.body(), data);
        let _ = n.to_string();
        let _ = n.shutdown_text();
    }
});
