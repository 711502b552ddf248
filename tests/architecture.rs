//! The module graph as ARCHITECTURE.md describes it, checked from the source: which module
//! may import which, and no import cycles — between the top-level modules, and between the
//! sibling files of each module (a parent `mod.rs` and its children may share types either
//! way, as Rust intends).
//!
//! The graph is read from the paths the code names (`crate::a::b`, `super::b`, `use
//! super::{a, b}`), comments left out. A rule broken here means a layer leaked into another:
//! move the shared type down (usually into `model`), not the rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["bgp", "session"]`).
type Module = Vec<String>;
/// Each module and the modules it names.
type Edges = BTreeMap<Module, BTreeSet<Module>>;

/// Top-level modules and the ones each must never import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The shared vocabulary imports nothing of kube-gw.
    (
        "model",
        &[
            "admin",
            "api",
            "app",
            "backoff",
            "bfd",
            "bgp",
            "cli",
            "config",
            "control",
            "desired",
            "fib",
            "gateway",
            "ipvs",
            "kube",
            "lifecycle",
            "link",
            "metrics",
            "netlink",
            "pipeline",
            "reconcile",
            "telemetry",
        ],
    ),
    // The admin API is spoken by the daemon and the CLI alike: a leaf.
    (
        "api",
        &[
            "admin", "app", "bgp", "cli", "config", "control", "desired", "ipvs", "kube",
            "metrics", "netlink", "pipeline",
        ],
    ),
    (
        "config",
        &[
            "admin", "app", "bgp", "cli", "desired", "ipvs", "kube", "netlink", "pipeline",
        ],
    ),
    // Pure computation and the data-plane subsystems never see the Kubernetes adapter.
    (
        "desired",
        &[
            "kube", "netlink", "ipvs", "bgp", "pipeline", "admin", "app", "control",
        ],
    ),
    (
        "ipvs",
        &[
            "kube", "bgp", "netlink", "pipeline", "admin", "app", "control",
        ],
    ),
    (
        "netlink",
        &["kube", "bgp", "ipvs", "pipeline", "admin", "app", "control"],
    ),
    (
        "bgp",
        &[
            "kube", "ipvs", "netlink", "desired", "pipeline", "admin", "app", "control", "fib",
        ],
    ),
    // The FIB installer reads the speaker's statuses and writes routes: it knows neither
    // the cluster nor the VIP data path.
    (
        "fib",
        &[
            "kube", "ipvs", "netlink", "desired", "pipeline", "admin", "app", "control",
        ],
    ),
    // The gateway (L7 on the switch) gets its inputs as plain values and reports what it
    // serves: it knows neither the Kubernetes adapter nor the L4 data path nor the speaker.
    (
        "gateway",
        &[
            "kube", "ipvs", "netlink", "bgp", "bfd", "fib", "pipeline", "admin", "app", "control",
        ],
    ),
    // BFD serves any client protocol: it knows none of them, nor the configuration file
    // (`bgp::peer` turns a neighbor's keys into its `PeerSpec`).
    (
        "bfd",
        &[
            "bgp", "config", "kube", "ipvs", "netlink", "desired", "pipeline", "admin", "app",
            "control",
        ],
    ),
    // Only the composition root knows every subsystem; the admin side gets handles.
    ("admin", &["app", "cli"]),
    (
        "control",
        &["admin", "app", "cli", "bgp", "kube", "pipeline"],
    ),
];

/// The module path of a source file: `src/bgp/session.rs` → `bgp::session`,
/// `src/bgp/mod.rs` → `bgp`, `src/lib.rs` → ``.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string ("https://…") is rare in paths that matter here.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path the code names from `crate` or `super`, resolved to absolute paths.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        let start_ok = i == 0 || !ident(bytes[i - 1]);
        let (base, skip) = if start_ok && rest.starts_with("crate::") {
            (Vec::new(), 7)
        } else if start_ok && rest.starts_with("super::") {
            let mut b = module.to_vec();
            b.pop();
            (b, 7)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        // Either `a::b::…` or a group `{a, b::c}` (one level is enough here).
        if bytes.get(i) == Some(&'{') {
            let end = bytes[i..]
                .iter()
                .position(|c| *c == '}')
                .map_or(bytes.len(), |p| i + p);
            let group: String = bytes[i + 1..end].iter().collect();
            for item in group.split(',') {
                let path: Vec<String> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim().split(' ').next().unwrap_or("").to_string())
                    .filter(|s| !s.is_empty() && s.chars().all(ident))
                    .collect();
                if !path.is_empty() {
                    out.push([base.clone(), path].concat());
                }
            }
            i = end;
            continue;
        }
        let mut path = base;
        loop {
            let s = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            if s == i {
                break;
            }
            path.push(bytes[s..i].iter().collect());
            if bytes.get(i) == Some(&':') && bytes.get(i + 1) == Some(&':') {
                i += 2;
            } else {
                break;
            }
        }
        out.push(path);
    }
    out
}

/// The graph: module → the modules it names (longest known module prefix of each path).
fn graph() -> (BTreeSet<Module>, Edges) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: Edges = BTreeMap::new();
    for f in &all {
        let m = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for r in references(&m, &code(&text)) {
            let target = (1..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| modules.contains(p));
            if let Some(t) = target.filter(|t| *t != m) {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    (modules, edges)
}

fn cycle(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Option<Vec<String>> {
    // Depth-first search with colours; returns one cycle if there is one.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in nodes {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The top-level graph: `a::x` → `b::y` counts as `a` → `b` (a ≠ b).
fn top_level() -> BTreeMap<String, BTreeSet<String>> {
    let (_, edges) = graph();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in edges {
        let Some(a) = from.first() else { continue };
        for t in tos {
            if let Some(b) = t.first().filter(|b| *b != a) {
                top.entry(a.clone()).or_default().insert(b.clone());
            }
        }
    }
    top
}

#[test]
fn no_module_imports_one_it_must_not() {
    let top = top_level();
    let mut broken = Vec::new();
    for (m, forbidden) in FORBIDDEN {
        for f in *forbidden {
            if top.get(*m).is_some_and(|t| t.contains(*f)) {
                broken.push(format!("{m} imports {f}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layering broken: {broken:?}\ngraph: {top:#?}"
    );
    // The reader works: edges that must be there are seen.
    assert!(top["pipeline"].contains("desired"), "{top:#?}");
    assert!(top["kube"].contains("model"), "{top:#?}");
    assert!(top["app"].contains("bgp"), "{top:#?}");
}

#[test]
fn no_import_cycles_between_modules_or_between_sibling_files() {
    let top = top_level();
    let nodes: BTreeSet<String> = top
        .keys()
        .cloned()
        .chain(top.values().flatten().cloned())
        .collect();
    assert_eq!(
        cycle(&nodes, &top),
        None,
        "a cycle between top-level modules"
    );
    // Within each module: its files, the parent's mod.rs left out.
    let (modules, edges) = graph();
    let parents: BTreeSet<Vec<String>> = modules
        .iter()
        .filter(|m| m.len() >= 2)
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    for parent in parents {
        let mut sib: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, tos) in &edges {
            if from.len() != parent.len() + 1 || !from.starts_with(&parent) {
                continue;
            }
            for t in tos {
                if t.len() > parent.len() && t.starts_with(&parent) {
                    sib.entry(from[parent.len()].clone())
                        .or_default()
                        .insert(t[parent.len()].clone());
                }
            }
        }
        let nodes: BTreeSet<String> = sib
            .keys()
            .cloned()
            .chain(sib.values().flatten().cloned())
            .collect();
        assert_eq!(
            cycle(&nodes, &sib),
            None,
            "a cycle between the files of {}",
            parent.join("::")
        );
    }
    // The checker finds a cycle when there is one.
    let fake: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    let nodes = fake.keys().cloned().collect();
    assert!(cycle(&nodes, &fake).is_some());
}

#[test]
fn the_composition_root_and_the_session_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (file, most) in [("app.rs", 300), ("bgp/session.rs", 500)] {
        // The file's code: its unit tests (from `#[cfg(test)]` on) do not count.
        let lines = std::fs::read_to_string(src.join(file))
            .unwrap()
            .lines()
            .take_while(|l| l.trim() != "#[cfg(test)]")
            .count();
        assert!(
            lines <= most,
            "src/{file} has {lines} lines of code (at most {most}): split what is not its job out"
        );
    }
}
