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
pub use validate::FileChecks;

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
    load_with(path, FileChecks::Check)
}

/// [`load`], looking at the referenced files or not ([`FileChecks`]).
pub fn load_with(path: &Path, files: FileChecks) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic::file_level(
            path,
            format!("cannot read the configuration file: {e}"),
            "create it (see /usr/share/doc/kube-gw/examples/) or pass --config PATH",
        )],
    })?;
    parse_with(path, &text, files)
}

/// Parses and validates configuration text. `path` names the file in messages, and relative
/// file references in the configuration (`kubeconfig = "kubeconfig"`) are resolved against
/// its directory, so `/etc/kube-gw/config.toml` can name its neighbours by file name.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    parse_with(path, text, FileChecks::Check)
}

/// [`parse`], looking at the referenced files or not ([`FileChecks`]).
pub fn parse_with(path: &Path, text: &str, files: FileChecks) -> Result<Loaded, ConfigError> {
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
            "gateway" => raw.gateway = section(&source, item, &mut diags).map(Some),
            "admin" => raw.admin = section(&source, item, &mut diags),
            "log" => raw.log = section(&source, item, &mut diags),
            _ => {}
        }
    }
    let parsed_ok = diags.is_empty();
    raw.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    let findings = validate::validate(&raw, files);
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
pub const SECTIONS: &[&str] = &[
    "node",
    "kubernetes",
    "vip",
    "ipvs",
    "bgp",
    "gateway",
    "admin",
    "log",
];

/// A configuration as it came out of deserialization: a section that failed to parse is
/// `None` (its errors are already recorded); an absent section holds its default.
#[derive(Debug, Clone)]
pub struct PartialConfig {
    pub node: Option<NodeConfig>,
    pub kubernetes: Option<Option<KubernetesConfig>>,
    pub vip: Option<VipConfig>,
    pub ipvs: Option<IpvsConfig>,
    pub bgp: Option<Option<BgpConfig>>,
    pub gateway: Option<Option<GatewayConfig>>,
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
            gateway: Some(None),
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
            gateway: self.gateway?,
            admin: self.admin?,
            log: self.log?,
        })
    }
}

/// Deserializes one section (or `[[bgp.neighbors]]` entry) from the document; its errors
/// go to `diags`. The one copy made is what the deserializer consumes (a configuration can
/// hold a hundred thousand static prefixes).
fn section<T: DeserializeOwned>(
    source: &locate::Source<'_>,
    item: &toml_edit::Item,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    section_from(source, item.clone(), item, diags)
}

/// [`section`] from an owned copy `owned` of the document's `item` (where errors are
/// located).
fn section_from<T: DeserializeOwned>(
    source: &locate::Source<'_>,
    owned: toml_edit::Item,
    item: &toml_edit::Item,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let span = item.span();
    // serde names an unknown key but not where it is; find it while the table is at hand.
    let key_span = |msg: &str| {
        let name = msg.strip_prefix("unknown field `")?.split('`').next()?;
        item.as_table_like()?.key(name)?.span()
    };
    let value = match owned.into_value() {
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
    item: &toml_edit::Item,
    diags: &mut Vec<Diagnostic>,
) -> Option<(BgpConfig, Vec<usize>)> {
    // The common keys: the table without its `neighbors`, and without `static-prefixes` when
    // that is an array (it can hold a hundred thousand prefixes: read in place below rather
    // than copied for serde).
    let table = item.as_table_like();
    let statics = table
        .and_then(|t| t.get("static-prefixes"))
        .and_then(toml_edit::Item::as_array);
    let mut common_table = toml_edit::Table::new();
    for (k, v) in table.into_iter().flat_map(|t| t.iter()) {
        if k == "neighbors" || (k == "static-prefixes" && statics.is_some()) {
            continue;
        }
        common_table.insert(k, v.clone());
    }
    let common: Option<BgpCommon> =
        section_from(source, toml_edit::Item::Table(common_table), item, diags);
    let static_prefixes = statics.map(|a| static_prefixes(source, a, diags));
    let neighbors = table.and_then(|t| t.get("neighbors")).cloned();
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
        if let Some(n) = section::<NeighborConfig>(source, &entry, diags) {
            parsed.push(n);
            index.push(i);
        }
    }
    let mut common = common?;
    if let Some(p) = static_prefixes {
        common.set_static_prefixes(p?);
    }
    Some((common.with_neighbors(parsed), index))
}

/// `[bgp] static-prefixes`, read element by element from the document; each one that is not
/// a prefix is reported at its place. `None` if any is wrong.
fn static_prefixes(
    source: &locate::Source<'_>,
    arr: &toml_edit::Array,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<ipnet::IpNet>> {
    let mut out = Vec::with_capacity(arr.len());
    let mut ok = true;
    for (i, v) in arr.iter().enumerate() {
        match v.as_str().map(str::parse::<ipnet::IpNet>) {
            Some(Ok(p)) => out.push(p),
            Some(Err(e)) => {
                ok = false;
                diags.push(source.at_span(
                    v.span(),
                    &format!(
                        "bgp.static-prefixes[{i}]: `{}` is not a prefix: {e}",
                        v.as_str().unwrap_or_default()
                    ),
                    "write a network such as \"198.51.100.0/24\" or \"2001:db8::/48\"",
                    Severity::Error,
                ));
            }
            None => {
                ok = false;
                diags.push(source.at_span(
                    v.span(),
                    &format!("bgp.static-prefixes[{i}]: a static prefix must be a string"),
                    "write it in quotes, such as \"198.51.100.0/24\"",
                    Severity::Error,
                ));
            }
        }
    }
    ok.then_some(out)
}

/// Resolves the configuration path: the explicit one, else the default.
pub fn path_or_default(p: Option<PathBuf>) -> PathBuf {
    p.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_prefixes_are_read_in_place_and_each_bad_one_is_located() {
        let path = Path::new("c.toml");
        let ok = "[bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\n\
                  static-prefixes = [\"198.51.100.0/24\", \"2001:db8::/48\"]\n";
        let c = parse(path, ok).map_err(|e| e.to_string()).unwrap().config;
        let b = c.bgp.unwrap();
        assert_eq!(b.static_prefixes.len(), 2);
        assert_eq!(b.asn, 65010, "the other keys are still read");
        let bad = "[bgp]\nasn = 65010\nrouter-id = \"192.0.2.20\"\n\
                   static-prefixes = [\"198.51.100.0/24\", \"nope\", 5]\n";
        let e = parse(path, bad).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:4:39: bgp.static-prefixes[1]: `nope` is not a prefix"),
            "{e}"
        );
        assert!(
            e.contains("c.toml:4:47: bgp.static-prefixes[2]: a static prefix must be a string"),
            "{e}"
        );
        // Not an array at all: serde's type error, at the value.
        let e = parse(
            path,
            &bad.replace("[\"198.51.100.0/24\", \"nope\", 5]", "\"x\""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("c.toml:4:19:") && e.contains("expected a sequence"),
            "{e}"
        );
        // An unknown key next to them is still refused, at its place.
        let e = parse(path, &ok.replace("asn = 65010", "asn = 65010\nasm = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml:3:1:") && e.contains("asm"), "{e}");
    }
}
