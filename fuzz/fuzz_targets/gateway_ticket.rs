//! A session ticket a client presents: opened with the shared key it names or refused,
//! never a panic; and a ticket this switch made opens to what it sealed. The input goes in
//! both raw and behind the key's id, so that the fuzzer reaches the decryption itself.
#![no_main]
use std::collections::BTreeMap;
use std::sync::Arc;

use kube_gw::gateway::tickets::{SharedTicketer, TicketKeys};
use kube_gw::model::gateway::TicketSecret;
use kube_gw::model::ObjectKey;
use libfuzzer_sys::fuzz_target;
use rustls::server::ProducesTickets;

fuzz_target!(|data: &[u8]| {
    let name = ObjectKey {
        namespace: "kube-system".into(),
        name: "kube-gw-session-tickets".into(),
    };
    let mut entries: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
    entries.insert("k1".into(), Arc::from(&[7u8; 32][..]));
    let secret = TicketSecret {
        key: name.clone(),
        entries,
    };
    let keys = TicketKeys::from_secret(Some(&name), Some(&secret));
    let Some(t) = SharedTicketer::new(&keys) else {
        panic!("a 32-byte key is a key");
    };
    let _ = t.decrypt(data);
    let mut named = keys.keys[0].id.to_vec();
    named.extend_from_slice(data);
    let _ = t.decrypt(&named);
    if let Some(sealed) = t.encrypt(data) {
        assert_eq!(t.decrypt(&sealed).as_deref(), Some(data));
    }
});
