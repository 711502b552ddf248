//! `kube-gw check-config` and `run` against good and bad configurations: the examples in
//! `configs/` validate; each bad configuration fails with exit 78 and names the right
//! `line:col`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kube-gw");

fn kube_gw(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KUBE_GW_CONFIG")
        .output()
        .expect("run kube-gw")
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The files an example refers to, created next to it (as they would be in /etc/kube-gw).
fn materialize_references(dir: &Path, text: &str) {
    for key in [
        "kubeconfig",
        "ca-file",
        "bootstrap-token-file",
        "password-file",
    ] {
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(rest) = line.trim().strip_prefix(&format!("{key} = \"")) {
                let name = rest.trim_end_matches('"');
                write(dir, name, "placeholder\n", 0o600);
            }
        }
    }
}

#[test]
fn every_example_config_validates() {
    let mut seen = 0;
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        materialize_references(dir.path(), &text);
        let cfg = write(dir.path(), "config.toml", &text, 0o640);
        let out = kube_gw(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    }
    assert!(
        seen >= 3,
        "expected the spine, border-leaf and beside-frr examples, found {seen}"
    );
}

/// The README's line, as a new user runs it from a clone: the example names files that exist
/// only on a switch, so the file checks fail (and say which file); `--skip-files` checks
/// everything else.
#[test]
fn the_readme_s_check_config_line_works_as_written() {
    let spine = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/spine.toml");
    let out = kube_gw(&["check-config", "-c", spine]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubernetes.kubeconfig: cannot read"), "{err}");
    let out = kube_gw(&["check-config", "--skip-files", "-c", spine]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spine.toml: valid"));
    // Everything else is still checked.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(spine)
        .unwrap()
        .replace("asn = 65100", "asn = 23456");
    let bad = write(dir.path(), "config.toml", &text, 0o640);
    let out = kube_gw(&["check-config", "--skip-files", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AS_TRANS"));
}

const GOOD: &str = r#"[node]
name = "spine-1"

[vip]
pools = ["198.51.100.0/24"]

[bgp]
asn = 65010
router-id = "192.0.2.20"

[[bgp.neighbors]]
address = "192.0.2.1"
remote-asn = 65000
"#;

/// An unnumbered neighbor on swp1.
const LL_SWP1: &str =
    "[[bgp.neighbors]]\naddress = \"fe80::1\"\ninterface = \"swp1\"\nremote-asn = 65000\n";

#[test]
fn one_link_local_address_on_two_interfaces_is_two_neighbors() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{GOOD}{LL_SWP1}{}", LL_SWP1.replace("swp1", "swp2"));
    let cfg = write(dir.path(), "config.toml", &text, 0o644);
    let out = kube_gw(&["check-config", "-c", cfg.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_minimal_config_is_valid_and_defaults_fill_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.toml", GOOD, 0o644);
    let out = kube_gw(&["check-config", "--json", "-c", cfg.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    // The only finding is the warning that no cluster is configured.
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0]["severity"], "warning");
}

/// (what is wrong, the config text, the expected `line:col`, a word the message contains)
fn bad_cases(dir: &Path) -> Vec<(&'static str, String, &'static str, &'static str)> {
    let world = write(dir, "world.pw", "secret\n", 0o644);
    let tight = write(dir, "tight.pw", "secret\n", 0o600);
    let _ = tight;
    vec![
        (
            "unknown key",
            GOOD.replace("router-id", "routr-id = \"192.0.2.20\"\nrouter-id"),
            "9:1",
            "unknown field `routr-id`",
        ),
        (
            "unknown section",
            format!("{GOOD}\n[bfd]\nenabled = true\n"),
            "15:2",
            "unknown section `bfd`",
        ),
        (
            "ASN out of range",
            GOOD.replace("asn = 65010", "asn = 4294967296"),
            "8:7",
            "u32",
        ),
        (
            "a neighbor community that is not ASN:VALUE",
            format!("{GOOD}communities = [\"65010:100\", \"65010:x\"]\n"),
            "14:29",
            "is not a community",
        ),
        (
            "a passive neighbor while kube-gw does not listen",
            GOOD.replace(
                "router-id = \"192.0.2.20\"",
                "router-id = \"192.0.2.20\"\nlisten = false",
            ) + "passive = true\n",
            "15:11",
            "does not listen",
        ),
        (
            "ASN 0",
            GOOD.replace("asn = 65010", "asn = 0"),
            "8:7",
            "RFC 7607",
        ),
        (
            "AS_TRANS",
            GOOD.replace("remote-asn = 65000", "remote-asn = 23456"),
            "13:14",
            "AS_TRANS",
        ),
        (
            "router id is IPv6",
            GOOD.replace("\"192.0.2.20\"", "\"2001:db8::1\""),
            "9:13",
            "IPv4",
        ),
        (
            "overlapping pools",
            GOOD.replace(
                "[\"198.51.100.0/24\"]",
                "[\"198.51.100.0/24\", \"198.51.100.64/26\"]",
            ),
            "5:29",
            "overlaps pool",
        ),
        (
            "pool with host bits",
            GOOD.replace("198.51.100.0/24", "198.51.100.7/24"),
            "5:10",
            "host bits",
        ),
        (
            "a link-local IPv6 next hop",
            GOOD.replace(
                "remote-asn = 65000",
                "remote-asn = 65000\nnext-hop-ipv6 = \"fe80::1\"",
            ),
            "14:17",
            "cannot be a next hop",
        ),
        (
            "graceful restart while the addresses go at stop",
            GOOD.replace(
                "router-id = \"192.0.2.20\"",
                "router-id = \"192.0.2.20\"\ngraceful-restart = true",
            ),
            "10:20",
            "on-shutdown = \"keep\"",
        ),
        (
            "restart time beyond 12 bits",
            GOOD.replace(
                "pools = [\"198.51.100.0/24\"]",
                "pools = [\"198.51.100.0/24\"]\non-shutdown = \"keep\"",
            )
            .replace(
                "router-id = \"192.0.2.20\"",
                "router-id = \"192.0.2.20\"\ngraceful-restart = true\nrestart-time = 5000",
            ),
            "12:16",
            "12 bits",
        ),
        (
            "keepalive not below hold",
            GOOD.replace(
                "router-id = \"192.0.2.20\"",
                "router-id = \"192.0.2.20\"\nhold-time = 6\nkeepalive = 6",
            ),
            "11:13",
            "below the hold time",
        ),
        (
            "hold time 2",
            GOOD.replace(
                "router-id = \"192.0.2.20\"",
                "router-id = \"192.0.2.20\"\nhold-time = 2\nkeepalive = 1",
            ),
            "10:13",
            "hold time of 2 s",
        ),
        (
            "world-readable password file",
            format!("{GOOD}password-file = \"{}\"\n", world.display()),
            "14:17",
            "0644",
        ),
        (
            "missing password file",
            format!("{GOOD}password-file = \"{}/absent.pw\"\n", dir.display()),
            "14:17",
            "No such file",
        ),
        (
            "bad neighbor address",
            GOOD.replace("address = \"192.0.2.1\"", "address = \"192.0.2.256\""),
            "12:11",
            "invalid IP address",
        ),
        (
            "link-local neighbor without interface",
            GOOD.replace("address = \"192.0.2.1\"", "address = \"fe80::1\""),
            "12:11",
            "link-local",
        ),
        (
            "link-local neighbor twice on one interface",
            format!("{GOOD}{LL_SWP1}{LL_SWP1}"),
            "19:11",
            "configured twice",
        ),
        (
            "pool overlaps service CIDR",
            format!(
                "[kubernetes]\nkubeconfig = \"{}\"\nservice-cidrs = [\"198.51.0.0/16\"]\n{GOOD}",
                tight.display()
            ),
            "8:10",
            "Service CIDR",
        ),
        ("TOML syntax", GOOD.replace("[vip]", "[vip"), "4:5", ""),
        (
            "an import filter whose lengths cannot match",
            format!("{GOOD}import = [\"0.0.0.0/0\", \"203.0.113.0/24 le 16\"]\n"),
            "14:10",
            "24 <= ge <= le <= 32",
        ),
        (
            "another program's route protocol",
            GOOD.replace("router-id", "fib-protocol = 186\nrouter-id"),
            "9:16",
            "bgp (FRR)",
        ),
        (
            "a gateway source address inside a VIP pool",
            format!("{GOOD}[gateway]\nsource-addresses = [\"198.51.100.9\"]\n"),
            "15:20",
            "inside a VIP pool",
        ),
        (
            "a session-ticket Secret without its namespace",
            format!("{GOOD}[gateway]\nsession-ticket-secret = \"tickets\"\n"),
            "15:25",
            "namespace/name",
        ),
        (
            "wrong type",
            GOOD.replace("asn = 65010", "asn = \"65010\""),
            "8:7",
            "invalid type",
        ),
    ]
}

#[test]
fn bad_configs_exit_78_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (what, text, at, word) in bad_cases(dir.path()) {
        let cfg = write(dir.path(), "config.toml", &text, 0o644);
        let out = kube_gw(&["check-config", "-c", cfg.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let want = format!("{}:{at}: ", cfg.display());
        let line = stderr.lines().find(|l| l.starts_with(&want));
        let ok = out.status.code() == Some(78)
            && line.is_some_and(|l| l.contains(word) && l.contains(" — "));
        if !ok {
            failures.push(format!(
                "{what}: exit {:?}, wanted a line starting {want:?} containing {word:?}, got:\n{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("name = \"spine-1\"", "name = \"spine-1\"\ncolour = \"red\"")
        .replace("198.51.100.0/24", "198.51.100.1/24")
        .replace("asn = 65010", "asn = 23456")
        .replace("remote-asn = 65000", "remote-asn = \"externa\"");
    let cfg = write(dir.path(), "config.toml", &text, 0o644);
    let out = kube_gw(&["check-config", "--json", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<u64> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 6, 9, 14], "{v:#}");
}

#[test]
fn run_refuses_a_bad_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "config.toml",
        &GOOD.replace("asn = 65010", "asn = 0"),
        0o644,
    );
    let out = kube_gw(&["run", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":8:7: bgp.asn: AS 0 is reserved"),
        "{stderr}"
    );
    assert!(stderr.contains("not starting"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let out = kube_gw(&["check-config", "-c", "/nonexistent/kube-gw.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = kube_gw(&["completions", shell]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("check-config") && text.contains("status"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = kube_gw(&["man", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let page = std::fs::read_to_string(dir.path().join("kube-gw.8")).unwrap();
    assert!(page.contains(".TH kube-gw 8"), "{page}");
    let sub = std::fs::read_to_string(dir.path().join("kube-gw-check-config.8")).unwrap();
    assert!(sub.contains("78"), "{sub}");
}

#[test]
fn status_without_a_daemon_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let out = kube_gw(&["status", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the daemon running"));
}
