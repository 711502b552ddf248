//! The admin protocol on arbitrary lines, both sides: a request line the daemon reads
//! parses or is refused (never a panic), and what parses survives the trip back through
//! the CLI's encoding unchanged; a response line the CLI reads decodes into each answer
//! type or gives an error message.
#![no_main]
use kube_gw::api::{self, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(line) {
        let again = serde_json::to_string(&req).expect("a request encodes");
        assert_eq!(serde_json::from_str::<Request>(&again).ok(), Some(req));
    }
    if let Ok(resp) = serde_json::from_str::<Response>(line) {
        let _ = resp.details::<serde_json::Value>();
        let _ = resp.clone().decode::<api::Status>();
        let _ = resp.clone().decode::<api::Vips>();
        let _ = resp.clone().decode::<api::BgpNeighbors>();
        let _ = resp.clone().decode::<api::BgpRoutes>();
        let _ = resp.clone().decode::<api::ClusterView>();
        let _ = resp.decode::<api::DrainAnswer>();
    }
});
