//! Maps problems back to the place in the file where the operator must fix them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml_edit::{ImDocument, Item, TableLike, Value};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The daemon will not start (or reload) with this.
    Error,
    /// Allowed, but probably not what was meant.
    Warning,
}

/// One segment of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Where a semantic finding applies, e.g. `bgp.neighbors[1].address`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// A path of plain keys.
    pub fn keys(keys: &[&'static str]) -> Self {
        Self(keys.iter().map(|k| Seg::Key(k)).collect())
    }
    /// This path extended by a key.
    #[must_use]
    pub fn key(mut self, k: &'static str) -> Self {
        self.0.push(Seg::Key(k));
        self
    }
    /// This path extended by an index.
    #[must_use]
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Seg::Index(i));
        self
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A semantic finding before it is placed in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: KeyPath,
    pub message: String,
    pub hint: String,
    pub severity: Severity,
}

/// A problem placed in the file: `path:line:col: message — hint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    pub message: String,
    pub hint: String,
    pub severity: Severity,
}

impl Diagnostic {
    pub(crate) fn file_level(path: &Path, message: String, hint: &str) -> Self {
        Self {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            message,
            hint: hint.to_string(),
            severity: Severity::Error,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        if self.line == 0 {
            write!(
                f,
                "{}: {sev}{} — {}",
                self.file.display(),
                self.message,
                self.hint
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {sev}{} — {}",
                self.file.display(),
                self.line,
                self.col,
                self.message,
                self.hint
            )
        }
    }
}

/// The file being checked, with a line index for turning byte offsets into positions.
pub(crate) struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            path,
            text,
            line_starts,
        }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub(crate) fn at_span(
        &self,
        span: Option<Range<usize>>,
        message: &str,
        hint: &str,
        severity: Severity,
    ) -> Diagnostic {
        let (line, col) = span.map_or((0, 0), |s| self.position(s.start));
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            col,
            message: message.to_string(),
            hint: hint.to_string(),
            severity,
        }
    }

    /// A deserialization error, placed at `at`.
    pub(crate) fn serde_error(
        &self,
        e: &toml_edit::de::Error,
        at: Option<Range<usize>>,
    ) -> Diagnostic {
        let msg = e.message().trim().to_string();
        let hint = serde_hint(&msg);
        self.at_span(at, &msg, hint, Severity::Error)
    }

    /// A semantic finding, placed at the value its path names, or at the nearest enclosing
    /// element that exists in the file (a default that is wrong points at its section).
    pub(crate) fn at_path(&self, doc: &ImDocument<&str>, f: Finding) -> Diagnostic {
        let span = resolve(doc, &f.path);
        let message = if f.path.0.is_empty() {
            f.message
        } else {
            format!("{}: {}", f.path, f.message)
        };
        self.at_span(span, &message, &f.hint, f.severity)
    }
}

fn serde_hint(msg: &str) -> &'static str {
    if msg.starts_with("unknown field") {
        "remove it or correct its spelling"
    } else if msg.starts_with("missing field") {
        "add it; it has no default"
    } else if msg.starts_with("unknown variant") {
        "use one of the listed values"
    } else if msg.contains("invalid IP address") || msg.contains("invalid IPv4") {
        "write an address such as 192.0.2.1 or 2001:db8::1"
    } else if msg.contains("invalid IP network") || msg.contains("invalid IP") {
        "write a prefix such as 198.51.100.0/24 or 2001:db8:100::/64"
    } else if msg.contains("is neither an AS number") || msg.contains("AS number") {
        "write the peer's AS number, \"external\" or \"internal\""
    } else if msg.contains("invalid socket address") {
        "write address:port, e.g. 127.0.0.1:9472 or [::1]:9472"
    } else if msg.starts_with("invalid type") {
        "change the value to the expected type"
    } else if msg.starts_with("invalid value") {
        "use a value in the allowed range"
    } else {
        "see kube-gw.toml(5) and the commented examples in configs/"
    }
}

fn resolve(doc: &ImDocument<&str>, path: &KeyPath) -> Option<Range<usize>> {
    enum Cur<'d> {
        Table(&'d dyn TableLike),
        Item(&'d Item),
        Value(&'d Value),
    }
    let mut cur = Cur::Table(doc.as_table());
    let mut best = None;
    for seg in &path.0 {
        let next = match (cur, seg) {
            (cur, Seg::Key(k)) => {
                let tl: Option<&dyn TableLike> = match cur {
                    Cur::Table(t) => Some(t),
                    Cur::Item(it) => it.as_table_like(),
                    Cur::Value(Value::InlineTable(t)) => Some(t),
                    Cur::Value(_) => None,
                };
                if let Some(s) = tl.and_then(|t| t.key(k)).and_then(toml_edit::Key::span) {
                    best = Some(s);
                }
                tl.and_then(|t| t.get(k))
                    .map(|it| (Cur::Item(it), it.span()))
            }
            (Cur::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a
                .get(*i)
                .map(|t| (Cur::Table(t as &dyn TableLike), t.span())),
            (
                Cur::Item(Item::Value(Value::Array(a))) | Cur::Value(Value::Array(a)),
                Seg::Index(i),
            ) => a.get(*i).map(|v| (Cur::Value(v), v.span())),
            _ => None,
        };
        match next {
            Some((n, span)) => {
                if span.is_some() {
                    best = span;
                }
                cur = n;
            }
            None => break,
        }
    }
    best
}
