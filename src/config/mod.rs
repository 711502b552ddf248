//! Configuration: the schema of `/etc/kube-gw/config.toml`, how it is read, and how its
//! errors are reported.
//!
//! Role: turn a TOML file into a [`Config`] that the rest of the daemon can trust, or into a
//! list of [`Diagnostic`]s that each say `path:line:col: what is wrong — what to do`.
//!
//! Inputs: the file's text. Outputs: `Config` (owned by the app, published to subsystems
//! through a `watch` channel as `Arc<Config>`), or every error found, not only the first.
//!
//! How errors are collected: the document is parsed once with `toml_edit` (which keeps byte
//! spans), then each top-level section — and each `[[bgp.neighbors]]` entry on its own — is
//! deserialized separately with `deny_unknown_fields`, so one bad section does not hide the
//! errors of another. Sections that parsed then go through the semantic pass in
//! [`validate`], whose findings carry a key path that [`locate`] maps back to a line and
//! column in the original text.

mod locate;
mod schema;
pub mod validate;

use std::path::{Path, PathBuf};

pub use locate::{Diagnostic, KeyPath, Severity};
pub use schema::*;

use serde::de::DeserializeOwned;
use toml_edit::ImDocument;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/kube-gw/config.toml";

/// A configuration that failed to load, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct ConfigError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The result of a successful load: the configuration and any warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Findings that do not stop the daemon (printed by `check-config`, logged by `run`).
    pub warnings: Vec<Diagnostic>,
}

/// Reads, parses and validates the configuration at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic::file_level(
            path,
            format!("cannot read the configuration file: {e}"),
            "create it (see /usr/share/doc/kube-gw/examples/) or pass --config PATH",
        )],
    })?;
    parse(path, &text)
}

/// Parses and validates configuration text. `path` names the file in messages, and relative
/// file references in the configuration (`kubeconfig = "kubeconfig"`) are resolved against
/// its directory, so `/etc/kube-gw/config.toml` can name its neighbours by file name.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let source = locate::Source::new(path, text);
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(ConfigError {
                diagnostics: vec![source.at_span(
                    e.span(),
                    first_line(e.message()),
                    "fix the TOML syntax at this place",
                    Severity::Error,
                )],
            })
        }
    };
    let mut raw = PartialConfig::default();
    let mut diags = Vec::new();
    let root = doc.as_table();
    for (key, item) in root.iter() {
        if !SECTIONS.contains(&key) {
            let span = root.key(key).and_then(toml_edit::Key::span);
            diags.push(source.at_span(
                span,
                &format!("unknown section `{key}`"),
                &format!("remove it; the known sections are {}", SECTIONS.join(", ")),
                Severity::Error,
            ));
            continue;
        }
        let item = item.clone();
        match key {
            "node" => raw.node = section(&source, item, &mut diags),
            "kubernetes" => raw.kubernetes = section(&source, item, &mut diags).map(Some),
            "vip" => raw.vip = section(&source, item, &mut diags),
            "ipvs" => raw.ipvs = section(&source, item, &mut diags),
            "bgp" => match bgp_section(&source, item, &mut diags) {
                Some((bgp, index)) => {
                    raw.bgp = Some(Some(bgp));
                    raw.neighbor_index = index;
                }
                None => raw.bgp = None,
            },
            "admin" => raw.admin = section(&source, item, &mut diags),
            "log" => raw.log = section(&source, item, &mut diags),
            _ => {}
        }
    }
    let parsed_ok = diags.is_empty();
    raw.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    let findings = validate::validate(&raw);
    for f in findings {
        diags.push(source.at_path(&doc, f));
    }
    let (errors, warnings): (Vec<_>, Vec<_>) = diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    if !errors.is_empty() || !parsed_ok {
        let mut all = errors;
        all.sort_by_key(|d| (d.line, d.col));
        return Err(ConfigError { diagnostics: all });
    }
    let Some(config) = raw.finish() else {
        // Unreachable in practice: every section parsed. Report rather than panic.
        return Err(ConfigError {
            diagnostics: vec![Diagnostic::file_level(
                path,
                "internal error: a section parsed but was not kept".to_string(),
                "report this as a bug",
            )],
        });
    };
    Ok(Loaded { config, warnings })
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// The top-level sections that exist.
pub const SECTIONS: &[&str] = &["node", "kubernetes", "vip", "ipvs", "bgp", "admin", "log"];

/// A configuration as it came out of deserialization: a section that failed to parse is
/// `None` (its errors are already recorded); an absent section holds its default.
#[derive(Debug, Clone)]
pub struct PartialConfig {
    pub node: Option<NodeConfig>,
    pub kubernetes: Option<Option<KubernetesConfig>>,
    pub vip: Option<VipConfig>,
    pub ipvs: Option<IpvsConfig>,
    pub bgp: Option<Option<BgpConfig>>,
    pub admin: Option<AdminConfig>,
    pub log: Option<LogConfig>,
    /// For each parsed neighbor, its position among `[[bgp.neighbors]]` in the file.
    pub neighbor_index: Vec<usize>,
}

impl Default for PartialConfig {
    fn default() -> Self {
        Self {
            node: Some(NodeConfig::default()),
            kubernetes: Some(None),
            vip: Some(VipConfig::default()),
            ipvs: Some(IpvsConfig::default()),
            bgp: Some(None),
            admin: Some(AdminConfig::default()),
            log: Some(LogConfig::default()),
            neighbor_index: Vec::new(),
        }
    }
}

impl PartialConfig {
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        };
        if let Some(Some(k)) = &mut self.kubernetes {
            fix(&mut k.kubeconfig);
            fix(&mut k.ca_file);
            fix(&mut k.bootstrap_token_file);
            if k.state_dir.is_relative() {
                k.state_dir = base.join(&k.state_dir);
            }
        }
        if let Some(Some(b)) = &mut self.bgp {
            for n in &mut b.neighbors {
                fix(&mut n.password_file);
            }
        }
    }

    fn finish(self) -> Option<Config> {
        Some(Config {
            node: self.node?,
            kubernetes: self.kubernetes?,
            vip: self.vip?,
            ipvs: self.ipvs?,
            bgp: self.bgp?,
            admin: self.admin?,
            log: self.log?,
        })
    }
}

fn section<T: DeserializeOwned>(
    source: &locate::Source<'_>,
    item: toml_edit::Item,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let span = item.span();
    // serde names an unknown key but not where it is; find it while the table is at hand.
    let key_span = |msg: &str| {
        let name = msg.strip_prefix("unknown field `")?.split('`').next()?;
        item.as_table_like()?.key(name)?.span()
    };
    let value = match item.clone().into_value() {
        Ok(v) => v,
        Err(_) => {
            diags.push(source.at_span(
                span,
                "this must be a table",
                "write it as a [section] with keys below it",
                Severity::Error,
            ));
            return None;
        }
    };
    match T::deserialize(serde::de::IntoDeserializer::into_deserializer(value)) {
        Ok(v) => Some(v),
        Err(e) => {
            let at = key_span(e.message()).or_else(|| e.span()).or(span);
            diags.push(source.serde_error(&e, at));
            None
        }
    }
}

/// `[bgp]` is read in two steps so that each neighbor is checked on its own. Returns the
/// section with the neighbors that parsed, and each one's position in the file (so that
/// semantic findings name the right entry); the caller learns of failures through `diags`.
fn bgp_section(
    source: &locate::Source<'_>,
    mut item: toml_edit::Item,
    diags: &mut Vec<Diagnostic>,
) -> Option<(BgpConfig, Vec<usize>)> {
    let neighbors = item.as_table_like_mut().and_then(|t| t.remove("neighbors"));
    let common: Option<BgpCommon> = section(source, item, diags);
    let entries: Vec<toml_edit::Item> = match neighbors {
        None => Vec::new(),
        Some(toml_edit::Item::ArrayOfTables(arr)) => {
            arr.into_iter().map(toml_edit::Item::Table).collect()
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(arr))) => {
            arr.into_iter().map(toml_edit::Item::Value).collect()
        }
        Some(other) => {
            diags.push(source.at_span(
                other.span(),
                "`neighbors` must be a list of tables",
                "write each neighbor as a [[bgp.neighbors]] block",
                Severity::Error,
            ));
            Vec::new()
        }
    };
    let mut parsed = Vec::new();
    let mut index = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if let Some(n) = section::<NeighborConfig>(source, entry, diags) {
            parsed.push(n);
            index.push(i);
        }
    }
    Some((common?.with_neighbors(parsed), index))
}

/// Resolves the configuration path: the explicit one, else the default.
pub fn path_or_default(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}
