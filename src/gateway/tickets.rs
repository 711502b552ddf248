//! TLS session-ticket keys shared by every switch, so that a client ECMP moves to another
//! switch (or that comes back after a restart) still resumes its session.
//!
//! - Input: the Secret named by `[gateway] session-ticket-secret` (default
//!   `kube-system/kube-gw-session-tickets`), as the Kubernetes adapter found it. Each data entry
//!   is one key: exactly 32 random bytes (`head -c 32 /dev/urandom`). The entry whose name
//!   sorts last encrypts new tickets; every entry decrypts. To rotate, add an entry with a
//!   later name (a date), and remove the oldest once it has encrypted nothing for a ticket
//!   lifetime ([`LIFETIME`]).
//! - Output: a [`TicketKeys`] plan (pure, in [`GatewayState`](super::plan::GatewayState)) and
//!   the rustls ticketer made from it ([`SharedTicketer`], AES-256-GCM). Without the Secret,
//!   or when none of its entries is a key, each switch uses its own random keys (resumption
//!   then works on that switch only) and `kube-gw gateway` says why.
//! - A ticket is `key id (16) ‖ salt (16) ‖ ciphertext ‖ tag (16)`; the id is a hash of the
//!   key, so a switch decrypts with the key that encrypted or refuses the ticket (the client
//!   then makes a full handshake). Each ticket is sealed under its own key, derived with
//!   HKDF-SHA256 from the shared key and the ticket's random salt: a fleet may seal billions
//!   of tickets under one shared key, which random 96-bit GCM nonces under one key would not
//!   bear (NIST's bound is 2^32 messages). Key bytes never appear in logs, status or errors.

use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use crate::model::gateway::TicketSecret;
use crate::model::ObjectKey;

/// How long a ticket is good for (seconds): as rustls's own ticketer.
pub const LIFETIME: u32 = 6 * 3600;

const ID_LEN: usize = 16;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const HEAD: usize = ID_LEN + SALT_LEN;
/// HKDF `info` of the per-ticket keys.
const INFO: &[u8] = b"kube-gw session ticket v1";

/// One key: its id (a hash of it) and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    /// The Secret's entry name.
    pub name: String,
    pub id: [u8; ID_LEN],
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("name", &self.name)
            .field("id", &hex(&self.id[..4]))
            .finish_non_exhaustive()
    }
}

/// Where the ticket keys come from, and the keys (the encrypting one first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TicketKeys {
    /// The configured Secret (`None`: sharing is off in the configuration).
    pub secret: Option<ObjectKey>,
    #[serde(skip)]
    pub keys: Vec<TicketKey>,
    /// Why the keys are this switch's own, or which entries were ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl TicketKeys {
    /// The keys from `found` (the Secret `configured` names, if the cluster has it).
    pub fn from_secret(configured: Option<&ObjectKey>, found: Option<&TicketSecret>) -> Self {
        let Some(name) = configured else {
            return Self::default();
        };
        let Some(s) = found.filter(|s| &s.key == name) else {
            return Self {
                secret: Some(name.clone()),
                keys: Vec::new(),
                problem: Some(format!(
                    "Secret {name} not found: create it with one entry of 32 random bytes \
                     (kubectl create secret generic -n {} {} --from-file=k1=<(head -c 32 /dev/urandom))",
                    name.namespace, name.name
                )),
            };
        };
        let mut keys = Vec::new();
        let mut bad = Vec::new();
        // Last name first: it encrypts.
        for (entry, bytes) in s.entries.iter().rev() {
            match <[u8; KEY_LEN]>::try_from(&bytes[..]) {
                Ok(key) => keys.push(TicketKey {
                    name: entry.clone(),
                    id: key_id(&key),
                    key,
                }),
                Err(_) => bad.push(format!("{entry} ({} bytes)", bytes.len())),
            }
        }
        let problem = (!bad.is_empty()).then(|| {
            format!(
                "entries ignored, a key is exactly 32 bytes: {}",
                bad.join(", ")
            )
        });
        Self {
            secret: Some(name.clone()),
            problem: if keys.is_empty() {
                Some(format!(
                    "no key in Secret {name}: {}",
                    problem.as_deref().unwrap_or("it has no entries")
                ))
            } else {
                problem
            },
            keys,
        }
    }

    /// The keys are shared (from the Secret).
    pub fn shared(&self) -> bool {
        !self.keys.is_empty()
    }

    /// What `kube-gw gateway` shows.
    pub fn describe(&self) -> String {
        let source = match (&self.secret, self.keys.first()) {
            (None, _) => "this switch's own keys (session-ticket-secret is off)".to_string(),
            (Some(s), Some(k)) => format!(
                "shared from Secret {s}: {} key(s), {} encrypts",
                self.keys.len(),
                k.name
            ),
            (Some(_), None) => "this switch's own keys".to_string(),
        };
        match &self.problem {
            Some(p) => format!("{source}; {p}"),
            None => source,
        }
    }
}

fn key_id(key: &[u8; KEY_LEN]) -> [u8; ID_LEN] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"kube-gw session ticket key id\0");
    ctx.update(key);
    let d = ctx.finish();
    let mut id = [0; ID_LEN];
    id.copy_from_slice(&d.as_ref()[..ID_LEN]);
    id
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The rustls ticketer over shared keys: seals with the first, opens with the one the ticket
/// names; each ticket under its own key derived from the shared one and the ticket's salt.
pub struct SharedTicketer {
    keys: Vec<([u8; ID_LEN], [u8; KEY_LEN])>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl SharedTicketer {
    /// `None` when `keys` has no key.
    pub fn new(keys: &TicketKeys) -> Option<Arc<Self>> {
        let keys: Vec<_> = keys.keys.iter().map(|k| (k.id, k.key)).collect();
        (!keys.is_empty()).then(|| {
            Arc::new(Self {
                keys,
                rng: SystemRandom::new(),
            })
        })
    }
}

/// The AEAD key of one ticket: HKDF-SHA256 (salt: the ticket's, key: the shared one).
fn ticket_key(shared: &[u8; KEY_LEN], salt: &[u8]) -> Option<LessSafeKey> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(shared);
    let okm = prk.expand(&[INFO], &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Each ticket has its own key, so one fixed nonce is safe.
fn nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; NONCE_LEN])
}

impl rustls::server::ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (id, shared) = self.keys.first()?;
        let mut head = [0u8; HEAD];
        head[..ID_LEN].copy_from_slice(id);
        self.rng.fill(&mut head[ID_LEN..]).ok()?;
        let key = ticket_key(shared, &head[ID_LEN..])?;
        let mut out = Vec::with_capacity(HEAD + plain.len() + TAG_LEN);
        out.extend_from_slice(&head);
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(nonce(), Aad::from(&head), &mut out[HEAD..])
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < HEAD + TAG_LEN {
            return None;
        }
        let (head, body) = cipher.split_at(HEAD);
        let (_, shared) = self.keys.iter().find(|(id, _)| id[..] == head[..ID_LEN])?;
        let key = ticket_key(shared, &head[ID_LEN..])?;
        let mut body = body.to_vec();
        let plain = key
            .open_in_place(nonce(), Aad::from(head), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rustls::server::ProducesTickets;

    use super::*;

    fn secret(entries: &[(&str, &[u8])]) -> TicketSecret {
        TicketSecret {
            key: ObjectKey::new("kube-system", "tickets"),
            entries: entries
                .iter()
                .map(|(n, b)| (n.to_string(), Arc::from(*b)))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn name() -> ObjectKey {
        ObjectKey::new("kube-system", "tickets")
    }

    #[test]
    fn the_last_entry_encrypts_and_every_entry_decrypts() {
        let old = secret(&[("2026-11-01", &[1; 32])]);
        let both = secret(&[("2026-11-01", &[1; 32]), ("2026-12-01", &[2; 32])]);
        let new = secret(&[("2026-12-01", &[2; 32])]);
        let t_old = SharedTicketer::new(&TicketKeys::from_secret(Some(&name()), Some(&old)))
            .expect("a key");
        let k_both = TicketKeys::from_secret(Some(&name()), Some(&both));
        assert_eq!(k_both.keys[0].name, "2026-12-01");
        assert_eq!(k_both.problem, None);
        let t_both = SharedTicketer::new(&k_both).expect("keys");
        let t_new = SharedTicketer::new(&TicketKeys::from_secret(Some(&name()), Some(&new)))
            .expect("a key");

        let from_old = t_old.encrypt(b"session one").expect("sealed");
        assert_ne!(&from_old[HEAD..][..11], b"session one");
        // Two tickets of the same state differ (their own salt, so their own key).
        assert_ne!(t_old.encrypt(b"session one"), Some(from_old.clone()));
        // Another switch with the same Secret decrypts; during a rotation both keys do.
        assert_eq!(
            t_both.decrypt(&from_old).as_deref(),
            Some(&b"session one"[..])
        );
        let from_both = t_both.encrypt(b"session two").expect("sealed");
        assert_eq!(
            t_new.decrypt(&from_both).as_deref(),
            Some(&b"session two"[..])
        );
        // Once the old key is gone, its tickets are refused (a full handshake follows).
        assert_eq!(t_new.decrypt(&from_old), None);
        // Positive control for the refusal: the same ticket still opens where the key is.
        assert!(t_old.decrypt(&from_old).is_some());
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let s = secret(&[("k", &[7; 32])]);
        let t =
            SharedTicketer::new(&TicketKeys::from_secret(Some(&name()), Some(&s))).expect("a key");
        let good = t.encrypt(b"state").expect("sealed");
        assert!(t.decrypt(&good).is_some());
        for i in [0, ID_LEN, HEAD, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert_eq!(t.decrypt(&bad), None, "byte {i} flipped");
        }
        assert_eq!(t.decrypt(&good[..HEAD + TAG_LEN - 1]), None);
        assert_eq!(t.decrypt(&[]), None);
    }

    #[test]
    fn missing_secret_or_bad_entries_fall_back_and_say_why_without_the_bytes() {
        // The Secret's Debug (a snapshot's, in any log) names entries and lengths only.
        let dbg = format!("{:?}", secret(&[("k1", &[7; 32])]));
        assert!(dbg.contains("\"k1\": 32") && !dbg.contains("7, 7"), "{dbg}");
        let off = TicketKeys::from_secret(None, None);
        assert!(!off.shared() && off.secret.is_none());
        let missing = TicketKeys::from_secret(Some(&name()), None);
        assert!(!missing.shared());
        assert!(missing
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("not found")));
        let other = secret(&[("k", &[7; 32])]);
        let other = TicketSecret {
            key: ObjectKey::new("default", "tickets"),
            ..other
        };
        assert!(!TicketKeys::from_secret(Some(&name()), Some(&other)).shared());
        let short =
            TicketKeys::from_secret(Some(&name()), Some(&secret(&[("k", b"secret-short")])));
        assert!(!short.shared());
        let p = short.problem.clone().unwrap_or_default();
        assert!(p.contains("k (12 bytes)"), "{p}");
        assert!(!p.contains("secret-short") && !format!("{short:?}").contains("secret-short"));
        assert!(SharedTicketer::new(&short).is_none());
        let mixed = TicketKeys::from_secret(
            Some(&name()),
            Some(&secret(&[("a", &[1; 32]), ("b", b"xx")])),
        );
        assert!(mixed.shared());
        assert_eq!(mixed.keys.len(), 1);
        assert!(
            mixed.describe().contains("b (2 bytes)"),
            "{}",
            mixed.describe()
        );
    }
}
