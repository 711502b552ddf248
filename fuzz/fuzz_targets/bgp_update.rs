//! Received UPDATE bodies, RFC 7606 checks: a verdict or a NOTIFICATION, never a panic;
//! treat-as-withdraw never leaves a prefix announced.
#![no_main]
use kube_gw::bgp::inbound::{check, Context, Problem};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, body) = data.split_first().unwrap_or((&0, &[]));
    let ctx = Context {
        local_as: 65010,
        four_octet: flags & 1 == 1,
        external: flags & 2 == 2,
    };
    if let Ok(c) = check(body, &ctx) {
        if matches!(
            c.problem,
            Some(Problem::TreatAsWithdraw(_) | Problem::AsPathLoop)
        ) {
            assert!(c.announced.is_empty());
        }
    }
});
