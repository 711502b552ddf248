//! The model-override filter: an HTTPRoute `ExtensionRef` filter to a kube-gw
//! `ModelOverride` (`kube-gw.io/v1alpha1`) that rewrites the `model` field of JSON requests to
//! Ollama and OpenAI-compatible APIs before they reach the backend.
//!
//! - Inputs: the filter's settings ([`ModelOverride`], compiled by `compute.rs` from the
//!   object), a request's path, headers and body.
//! - Which requests: POSTs to one of the filter's paths (by default `/api/generate`,
//!   `/api/chat`, `/v1/chat/completions`, `/v1/completions`); others pass untouched.
//! - The rewrite: the body (up to `maxBodyBytes`) is read whole, must be one JSON object, and
//!   every top-level `model` member's value is replaced by the chosen model as a JSON string.
//!   Every other byte is the client's, in order (no re-serialisation: numbers, escapes, key
//!   order and whitespace stay as sent); `Content-Length` is set to the new length. A body
//!   without a top-level `model` passes unchanged.
//! - The choice: one of the filter's models, by weight, per request.
//! - Not JSON (or not an object), or larger than the bound: with `onUnparsable: PassThrough`
//!   (the default) the body goes to the backend exactly as it came (an oversize body is
//!   streamed on after the part already read); with `Reject` the client gets 400 (not JSON)
//!   or 413 (too large). A body is never half-rewritten.
//! - Responses are not touched here: the proxy streams them (SSE, NDJSON) as they come.

use std::collections::VecDeque;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::StatusCode;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;

use super::pool::BoxError;

/// The paths a filter without `paths` applies to.
pub const DEFAULT_PATHS: [&str; 4] = [
    "/api/generate",
    "/api/chat",
    "/v1/chat/completions",
    "/v1/completions",
];

/// The bound on a body read for rewriting when the filter gives none.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// A compiled `ModelOverride`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelOverride {
    /// `namespace/name` of the object.
    pub name: String,
    /// (model, weight); weights > 0, at least one model.
    pub models: Vec<(String, u32)>,
    pub paths: Vec<String>,
    pub max_body: usize,
    /// `onUnparsable: Reject`: 400/413 instead of passing such bodies on.
    pub reject: bool,
}

impl ModelOverride {
    /// Whether a request with this method and path is the filter's to rewrite.
    pub fn applies(&self, method: &hyper::Method, path: &str) -> bool {
        method == hyper::Method::POST && self.paths.iter().any(|p| p == path)
    }

    /// The model for a request, by weight; `r` is a uniform random number.
    pub fn pick(&self, r: u64) -> &str {
        let total: u64 = self.models.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = r % total.max(1);
        for (m, w) in &self.models {
            if x < u64::from(*w) {
                return m;
            }
            x -= u64::from(*w);
        }
        self.models.first().map_or("", |(m, _)| m.as_str())
    }
}

/// The outcome of [`rewrite`].
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// The new body, and the (first) model the client asked for, as JSON text.
    Done { body: Vec<u8>, from: String },
    /// A JSON object without a top-level `model`: pass it on unchanged.
    NoModel,
    /// Not one JSON object: why.
    NotJson(String),
}

/// The top-level members of a JSON object, each value as the slice of the input it spans.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Replaces the value of every top-level `model` member of the JSON object `body` with
/// `model` (as a JSON string); every other byte stays as it was. Pure.
pub fn rewrite(body: &[u8], model: &str) -> Rewrite {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return Rewrite::NotJson(format!("not UTF-8: {e}")),
    };
    let members: Members<'_> = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => return Rewrite::NotJson(e.to_string()),
    };
    let base = text.as_ptr() as usize;
    let spans: Vec<(usize, usize)> = members
        .0
        .iter()
        .filter(|(k, _)| k == "model")
        .map(|(_, v)| {
            let start = v.get().as_ptr() as usize - base;
            (start, start + v.get().len())
        })
        .collect();
    let Some(&(s0, e0)) = spans.first() else {
        return Rewrite::NoModel;
    };
    let value = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into());
    let mut out = Vec::with_capacity(body.len() + value.len());
    let mut at = 0;
    for (s, e) in &spans {
        out.extend_from_slice(&body[at..*s]);
        out.extend_from_slice(value.as_bytes());
        at = *e;
    }
    out.extend_from_slice(&body[at..]);
    Rewrite::Done {
        body: out,
        from: text[s0..e0].to_string(),
    }
}

/// What [`apply`] did, for the access log.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// `from` (JSON text) → `to`.
    Rewritten { from: String, to: String },
    /// Passed on unchanged, and why.
    Unchanged(&'static str),
}

/// The body to send.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Reads `body` (up to the bound) and rewrites it for the backend, adjusting `headers`. An
/// `Err` is the status to answer the client with (`Reject`, or a client that broke off).
pub async fn apply(
    mo: &ModelOverride,
    model: &str,
    headers: &mut HeaderMap,
    mut body: Incoming,
) -> Result<(Body, Applied), StatusCode> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let oversize = || {
        if mo.reject {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            Ok(Applied::Unchanged("body over maxBodyBytes"))
        }
    };
    if declared.is_some_and(|n| n > mo.max_body as u64) {
        return oversize().map(|a| (body.map_err(BoxError::from).boxed(), a));
    }
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut len = 0usize;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| StatusCode::BAD_REQUEST)?;
        match frame.into_data() {
            Ok(d) => {
                len += d.len();
                chunks.push_back(d);
                if len > mo.max_body {
                    // Too large to rewrite: what was read, then the rest as it comes.
                    let applied = oversize()?;
                    let head = futures::stream::iter(
                        chunks
                            .into_iter()
                            .map(|c| Ok::<_, BoxError>(Frame::data(c))),
                    );
                    let rest = http_body_util::BodyStream::new(body.map_err(BoxError::from));
                    let stream = futures::StreamExt::chain(head, rest);
                    return Ok((StreamBody::new(stream).boxed(), applied));
                }
            }
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    let mut whole = Vec::with_capacity(len);
    for c in &chunks {
        whole.extend_from_slice(c);
    }
    let pass = |whole: Vec<u8>| -> Body {
        let full = http_body_util::Full::new(Bytes::from(whole));
        match trailers.clone() {
            Some(t) => full
                .map_err(|never| match never {})
                .with_trailers(async move { Some(Ok(t)) })
                .boxed(),
            None => full.map_err(|never| match never {}).boxed(),
        }
    };
    match rewrite(&whole, model) {
        Rewrite::Done { body: new, from } => {
            headers.remove(TRANSFER_ENCODING);
            headers.insert(CONTENT_LENGTH, HeaderValue::from(new.len()));
            Ok((
                pass(new),
                Applied::Rewritten {
                    from,
                    to: model.to_string(),
                },
            ))
        }
        Rewrite::NoModel => Ok((pass(whole), Applied::Unchanged("no top-level model"))),
        Rewrite::NotJson(_) if mo.reject => Err(StatusCode::BAD_REQUEST),
        Rewrite::NotJson(_) => Ok((pass(whole), Applied::Unchanged("not a JSON object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(body: &str, model: &str) -> (String, String) {
        match rewrite(body.as_bytes(), model) {
            Rewrite::Done { body, from } => (String::from_utf8(body).unwrap(), from),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_model_value_changes_byte_for_byte() {
        let body = "{ \"stream\":true,\n  \"model\" : \"llama3\", \"prompt\":\"say \\\"model\\\": x\", \"options\":{\"model\":\"inner\",\"n\":1.50e3} }";
        let (out, from) = done(body, "qwen2.5:0.5b");
        assert_eq!(from, "\"llama3\"");
        assert_eq!(
            out,
            "{ \"stream\":true,\n  \"model\" : \"qwen2.5:0.5b\", \"prompt\":\"say \\\"model\\\": x\", \"options\":{\"model\":\"inner\",\"n\":1.50e3} }"
        );
        // A model name that needs escaping is written as a JSON string.
        let (out, _) = done("{\"model\":1}", "a\"b");
        assert_eq!(out, "{\"model\":\"a\\\"b\"}");
        // Every top-level occurrence (a duplicate key cannot smuggle the old model through).
        let (out, _) = done("{\"model\":\"a\",\"model\":\"b\"}", "c");
        assert_eq!(out, "{\"model\":\"c\",\"model\":\"c\"}");
        // Unicode around it stays as sent.
        let (out, _) = done("{\"prompt\":\"héllo \\u00e9\",\"model\":\"x\"}", "y");
        assert_eq!(out, "{\"prompt\":\"héllo \\u00e9\",\"model\":\"y\"}");
    }

    #[test]
    fn non_objects_and_bodies_without_a_model_are_not_rewritten() {
        assert_eq!(rewrite(b"{\"prompt\":\"hi\"}", "m"), Rewrite::NoModel);
        for bad in [
            &b"[1,2]"[..],
            b"model=x",
            b"{\"model\":\"x\"",
            b"{\"model\":\"x\"} trailing",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(rewrite(bad, "m"), Rewrite::NotJson(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn weights_pick_each_model_in_proportion() {
        let mo = ModelOverride {
            name: "ns/mo".into(),
            models: vec![("a".into(), 3), ("b".into(), 1)],
            paths: DEFAULT_PATHS.iter().map(|p| p.to_string()).collect(),
            max_body: DEFAULT_MAX_BODY,
            reject: false,
        };
        let picks: Vec<&str> = (0..8).map(|r| mo.pick(r)).collect();
        assert_eq!(picks, ["a", "a", "a", "b", "a", "a", "a", "b"]);
        assert!(mo.applies(&hyper::Method::POST, "/api/chat"));
        assert!(!mo.applies(&hyper::Method::GET, "/api/chat"));
        assert!(!mo.applies(&hyper::Method::POST, "/api/tags"));
    }
}
