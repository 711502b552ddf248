//! The kernel settings the IPVS data path depends on: set at start where kube-gw may, and
//! checked where it may not (the packaged unit has `ProtectKernelTunables=yes`; the package
//! sets them in /usr/lib/sysctl.d/60-kube-gw.conf). `net.ipv4.vs.*` exist per network
//! namespace once `ip_vs` is loaded.

use std::path::{Path, PathBuf};

/// (sysctl name, value kube-gw needs, why).
pub const NEEDED: &[(&str, &str, &str)] = &[
    ("net.ipv4.ip_forward", "1", "the switch forwards traffic to the endpoints"),
    (
        "net.ipv6.conf.all.forwarding",
        "1",
        "the switch forwards IPv6 traffic to the endpoints",
    ),
    (
        "net.ipv4.vs.conntrack",
        "1",
        "IPVS connections need conntrack entries for the source NAT of externalTrafficPolicy: Cluster",
    ),
    (
        "net.ipv4.vs.sloppy_tcp",
        "1",
        "a TCP flow that moves to this switch mid-connection (ECMP rehash, a switch failing) must be taken up and sent to the backend Maglev picks for it",
    ),
    (
        "net.ipv4.vs.expire_nodest_conn",
        "1",
        "connections to a removed backend must end instead of black-holing",
    ),
];

fn path_of(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('.', "/"))
}

/// Sets what differs, under `root` (normally /proc/sys). Returns one line per setting that
/// is still wrong, saying what to do.
pub fn ensure_under(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, want, why) in NEEDED {
        let p = path_of(root, name);
        let have = match std::fs::read_to_string(&p) {
            Ok(v) => v.trim().to_string(),
            Err(e) => {
                problems.push(format!(
                    "{name} cannot be read ({e}); is ip_vs loaded (modprobe ip_vs)? {why}"
                ));
                continue;
            }
        };
        if have == *want {
            continue;
        }
        if let Err(e) = std::fs::write(&p, want) {
            problems.push(format!(
                "{name} is {have}, kube-gw needs {want} ({why}); it cannot set it ({e}): set it in /etc/sysctl.d/ or install the kube-gw package's /usr/lib/sysctl.d/60-kube-gw.conf"
            ));
        } else {
            tracing::info!(sysctl = name, from = %have, to = want, "kernel setting changed for IPVS");
        }
    }
    problems
}

/// [`ensure_under`] for this network namespace.
pub fn ensure() -> Vec<String> {
    ensure_under(Path::new("/proc/sys"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_settings_are_set_and_unreadable_ones_reported() {
        let dir = tempfile::tempdir().unwrap();
        for (name, _, _) in NEEDED {
            let p = path_of(dir.path(), name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "0\n").unwrap();
        }
        std::fs::remove_file(path_of(dir.path(), "net.ipv4.vs.sloppy_tcp")).unwrap();
        let problems = ensure_under(dir.path());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("net.ipv4.vs.sloppy_tcp"),
            "{problems:?}"
        );
        assert!(problems[0].contains("modprobe ip_vs"), "{problems:?}");
        let fwd = std::fs::read_to_string(path_of(dir.path(), "net.ipv4.ip_forward")).unwrap();
        assert_eq!(fwd, "1");
    }
}
