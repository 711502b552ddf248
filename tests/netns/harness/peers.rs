//! Real routing daemons (BIRD 2, FRR bgpd, GoBGP) and kube-gw itself, started inside a lab
//! namespace from generated configs, each with its own control socket in the lab directory,
//! and asked about their state through their own CLIs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{run, wait_for, Lab, Node};

/// How long a daemon may take to answer its CLI after start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A BIRD 2 instance.
#[derive(Debug)]
pub struct Bird {
    pub name: String,
    pub ctl: PathBuf,
}

impl Bird {
    /// Starts `bird -f` in `node` with `config`; returns once `birdc` answers.
    pub fn start(lab: &mut Lab, node: &Node, name: &str, config: &str) -> Self {
        let conf = lab.write(&format!("{name}.conf"), config);
        let ctl = lab.path(&format!("{name}.ctl"));
        let pid = lab.path(&format!("{name}.pid"));
        lab.spawn(
            node,
            name,
            "bird",
            &[
                "-f",
                "-c",
                conf.to_str().unwrap_or_default(),
                "-s",
                ctl.to_str().unwrap_or_default(),
                "-P",
                pid.to_str().unwrap_or_default(),
            ],
        );
        let bird = Bird {
            name: name.to_string(),
            ctl,
        };
        wait_for(
            &format!("{name} (bird) to answer birdc"),
            START_TIMEOUT,
            || {
                assert!(lab.running(name), "bird {name} exited:\n{}", lab.log(name));
                bird.try_birdc(&["show", "status"])
                    .filter(|o| o.contains("Daemon is up"))
            },
        );
        bird
    }

    fn try_birdc(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Runs a `birdc` command and returns its output.
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = run(Command::new("birdc").arg("-s").arg(&self.ctl).args(args));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The Info column of `show protocols` for `protocol` (e.g. `Established`, `Active`).
    pub fn protocol_info(&self, protocol: &str) -> String {
        let out = self.birdc(&["show", "protocols", protocol]);
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(protocol))
            .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// Waits until `protocol` is Established.
    pub fn wait_established(&self, protocol: &str, timeout: Duration) {
        wait_for(
            &format!("{} protocol {protocol} to be Established", self.name),
            timeout,
            || (self.protocol_info(protocol) == "Established").then_some(()),
        );
    }
}

/// An FRR `bgpd` running alone (`-Z`, no zebra), with its own vty socket directory.
#[derive(Debug)]
pub struct Frr {
    pub name: String,
    pub vty_dir: PathBuf,
}

impl Frr {
    /// Starts `bgpd` in `node` with `config`; returns once `vtysh` answers.
    pub fn start(lab: &mut Lab, node: &Node, name: &str, config: &str) -> Self {
        Self::start_in(lab, node, name, config, Daemons::BgpdOnly)
    }

    /// Starts `zebra` and `bgpd` in `node`: bgpd learns the interfaces (needed for
    /// link-local neighbors) and installs its routes into the namespace's kernel.
    pub fn start_with_zebra(lab: &mut Lab, node: &Node, name: &str, config: &str) -> Self {
        Self::start_in(lab, node, name, config, Daemons::Zebra)
    }

    /// Starts `zebra`, `bfdd` and `bgpd` in `node`: `neighbor X bfd` in `config` runs BFD
    /// sessions through bfdd (with the timers of its own configuration, `bfd_config`).
    pub fn start_with_bfd(
        lab: &mut Lab,
        node: &Node,
        name: &str,
        config: &str,
        bfd_config: &str,
    ) -> Self {
        Self::start_in(
            lab,
            node,
            name,
            config,
            Daemons::Bfd(bfd_config.to_string()),
        )
    }

    /// `vtysh -d bfdd -c CMD` (with [`Frr::start_with_bfd`]).
    pub fn bfdd(&self, cmd: &str) -> String {
        self.bfdd_lines(&[cmd])
    }

    /// `vtysh -d bfdd -c LINE -c LINE …`: one vty session, so `configure terminal` and
    /// the lines after it apply together.
    pub fn bfdd_lines(&self, lines: &[&str]) -> String {
        self.daemon_lines("bfdd", lines)
    }

    /// `vtysh -d bgpd -c LINE -c LINE …`, as [`Frr::bfdd_lines`].
    pub fn bgpd_lines(&self, lines: &[&str]) -> String {
        self.daemon_lines("bgpd", lines)
    }

    fn daemon_lines(&self, daemon: &str, lines: &[&str]) -> String {
        let mut cmd = Command::new("vtysh");
        cmd.arg("--vty_socket")
            .arg(&self.vty_dir)
            .args(["-d", daemon]);
        for l in lines {
            cmd.args(["-c", l]);
        }
        String::from_utf8_lossy(&run(&mut cmd).stdout).to_string()
    }

    fn start_in(lab: &mut Lab, node: &Node, name: &str, config: &str, daemons: Daemons) -> Self {
        let zebra = !matches!(daemons, Daemons::BgpdOnly);
        let conf = lab.write(&format!("{name}.conf"), config);
        let vty_dir = lab.path(&format!("{name}-vty"));
        std::fs::create_dir_all(&vty_dir).expect("vty dir");
        run(Command::new("chown").arg("frr:frr").arg(&vty_dir));
        run(Command::new("chown").arg("frr:frr").arg(&conf));
        let zserv = vty_dir.join("zserv.api");
        let (zserv, vty) = (
            zserv.to_str().unwrap_or_default(),
            vty_dir.to_str().unwrap_or_default(),
        );
        let ids = |daemon: &str| -> Vec<String> {
            let pid = vty_dir.join(format!("{daemon}.pid"));
            [
                "-u",
                "frr",
                "-g",
                "frr",
                "-i",
                pid.to_str().unwrap_or_default(),
                "--vty_socket",
                vty,
            ]
            .map(String::from)
            .to_vec()
        };
        let mut bgpd: Vec<String> = vec!["-f".into(), conf.to_str().unwrap_or_default().into()];
        bgpd.extend(ids("bgpd"));
        if zebra {
            let mut z: Vec<String> =
                vec!["-f".into(), "/dev/null".into(), "-z".into(), zserv.into()];
            z.extend(ids("zebra"));
            let z: Vec<&str> = z.iter().map(String::as_str).collect();
            let zname = format!("{name}-zebra");
            lab.spawn(node, &zname, "/usr/lib/frr/zebra", &z);
            wait_for(&format!("{zname} to listen"), START_TIMEOUT, || {
                assert!(
                    lab.running(&zname),
                    "zebra {zname} exited:\n{}",
                    lab.log(&zname)
                );
                std::path::Path::new(zserv).exists().then_some(())
            });
            if let Daemons::Bfd(bfd_config) = &daemons {
                let bconf = lab.write(&format!("{name}-bfdd.conf"), bfd_config);
                run(Command::new("chown").arg("frr:frr").arg(&bconf));
                let ctl = vty_dir.join("bfdd.sock");
                let mut b: Vec<String> = vec![
                    "-f".into(),
                    bconf.to_str().unwrap_or_default().into(),
                    "-z".into(),
                    zserv.into(),
                    "--bfdctl".into(),
                    ctl.to_str().unwrap_or_default().into(),
                ];
                b.extend(ids("bfdd"));
                let b: Vec<&str> = b.iter().map(String::as_str).collect();
                let bname = format!("{name}-bfdd");
                lab.spawn(node, &bname, "/usr/lib/frr/bfdd", &b);
                wait_for(&format!("{bname} to listen"), START_TIMEOUT, || {
                    assert!(
                        lab.running(&bname),
                        "bfdd {bname} exited:\n{}",
                        lab.log(&bname)
                    );
                    ctl.exists().then_some(())
                });
            }
            bgpd.extend(["-z".into(), zserv.into()]);
        } else {
            bgpd.push("-Z".into());
        }
        let bgpd: Vec<&str> = bgpd.iter().map(String::as_str).collect();
        lab.spawn(node, name, "/usr/lib/frr/bgpd", &bgpd);
        let frr = Frr {
            name: name.to_string(),
            vty_dir,
        };
        wait_for(
            &format!("{name} (frr bgpd) to answer vtysh"),
            START_TIMEOUT,
            || {
                assert!(lab.running(name), "bgpd {name} exited:\n{}", lab.log(name));
                frr.try_vtysh("show bgp summary json")
            },
        );
        frr
    }

    fn try_vtysh(&self, cmd: &str) -> Option<String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.vty_dir)
            .args(["-d", "bgpd", "-c", cmd])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Runs a `vtysh -c` command against this bgpd.
    pub fn vtysh(&self, cmd: &str) -> String {
        self.try_vtysh(cmd)
            .unwrap_or_else(|| panic!("vtysh -c {cmd:?} failed for {}", self.name))
    }

    /// The session state of `peer` as FRR reports it (`Established`, `Active`, …).
    pub fn peer_state(&self, peer: &str) -> String {
        let json = self.vtysh(&format!("show bgp neighbors {peer} json"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        v[peer]["bgpState"].as_str().unwrap_or("").to_string()
    }

    /// Waits until the session with `peer` is Established. On a timeout the panic carries
    /// FRR's view of the neighbor (state, last reset, connection counts) to say why.
    pub fn wait_established(&self, peer: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.peer_state(peer) != "Established" {
            if std::time::Instant::now() > deadline {
                let json = self
                    .try_vtysh(&format!("show bgp neighbors {peer} json"))
                    .unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                let n = &v[peer];
                panic!(
                    "timed out after {timeout:?} waiting for {} session with {peer} to be \
                     Established: state {}, last reset {}, connections established {} dropped {}, \
                     last error {}; FRR's full view: {json}",
                    self.name,
                    n["bgpState"],
                    n["lastResetDueTo"],
                    n["connectionsEstablished"],
                    n["connectionsDropped"],
                    n["lastErrorCodeSubcode"],
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Which FRR daemons run beside bgpd.
enum Daemons {
    BgpdOnly,
    Zebra,
    /// zebra and bfdd (with this bfdd configuration).
    Bfd(String),
}

/// A GoBGP daemon with its gRPC API on the namespace's loopback.
#[derive(Debug)]
pub struct GoBgp {
    pub name: String,
    pub node: Node,
}

impl GoBgp {
    /// Starts `gobgpd` in `node` with a TOML `config`; returns once `gobgp` answers.
    pub fn start(lab: &mut Lab, node: &Node, name: &str, config: &str) -> Self {
        let conf = lab.write(&format!("{name}.toml"), config);
        lab.spawn(
            node,
            name,
            "gobgpd",
            &[
                "-t",
                "toml",
                "-f",
                conf.to_str().unwrap_or_default(),
                "--api-hosts",
                "127.0.0.1:50051",
            ],
        );
        let g = GoBgp {
            name: name.to_string(),
            node: node.clone(),
        };
        wait_for(
            &format!("{name} (gobgpd) to answer gobgp"),
            START_TIMEOUT,
            || {
                assert!(
                    lab.running(name),
                    "gobgpd {name} exited:\n{}",
                    lab.log(name)
                );
                let out = g
                    .node
                    .try_exec("gobgp", &["-u", "127.0.0.1", "-p", "50051", "global"]);
                out.status.success().then_some(())
            },
        );
        g
    }

    /// Runs a `gobgp` CLI command against this daemon.
    pub fn gobgp(&self, args: &[&str]) -> String {
        let mut full = vec!["-u", "127.0.0.1", "-p", "50051"];
        full.extend_from_slice(args);
        let out = self.node.exec("gobgp", &full);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The session state of `peer` (`established`, `active`, …).
    pub fn peer_state(&self, peer: &str) -> String {
        let json = self.gobgp(&["neighbor", peer, "-j"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        match &v["state"]["session_state"] {
            serde_json::Value::String(s) => s.to_lowercase(),
            // GoBGP 3 prints the protobuf enum as a number; 6 is ESTABLISHED.
            serde_json::Value::Number(n) if n.as_u64() == Some(6) => "established".into(),
            other => other.to_string(),
        }
    }

    /// Waits until the session with `peer` is established.
    pub fn wait_established(&self, peer: &str, timeout: Duration) {
        wait_for(
            &format!("{} session with {peer} to be established", self.name),
            timeout,
            || (self.peer_state(peer) == "established").then_some(()),
        );
    }
}

/// kube-gw itself, run inside a namespace with its admin socket in the lab directory.
#[derive(Debug)]
pub struct KubeGw {
    pub name: String,
    pub socket: PathBuf,
    pub config: PathBuf,
}

/// The environment the systemd unit gives kube-gw (its `Environment=` lines), so that
/// tests and benchmarks run it as the package does.
pub fn unit_environment() -> Vec<String> {
    include_str!("../../../packaging/systemd/kube-gw.service")
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(String::from)
        .collect()
}

/// `kube-gw ARGS` as the unit runs it: through `env` with the unit's environment.
/// `KUBE_GW_WRAP` (e.g. `heaptrack -o /tmp/kg`) puts a profiler in front of the binary.
fn unit_command(args: &[&str]) -> Vec<String> {
    let mut v = unit_environment();
    if let Ok(wrap) = std::env::var("KUBE_GW_WRAP") {
        v.extend(wrap.split_whitespace().map(String::from));
    }
    v.push(KubeGw::bin());
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

impl KubeGw {
    /// The binary under test: cargo names it for tests and benches; an example finds it
    /// next to its own directory (`target/<profile>/examples/..`).
    pub fn bin() -> String {
        if let Some(b) = option_env!("CARGO_BIN_EXE_kube-gw") {
            return b.to_string();
        }
        std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("kube-gw")))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "kube-gw".into())
    }

    /// Starts `kube-gw run` in `node`. `config` is the body of the configuration without
    /// `[admin]`, which the harness adds (socket in the lab directory, metrics on the
    /// namespace's loopback). Returns once `kube-gw status` answers.
    pub fn start(lab: &mut Lab, node: &Node, name: &str, config: &str) -> Self {
        Self::start_wrapped(lab, node, name, config, &[])
    }

    /// [`start`](Self::start), with `wrap` in front of the command (e.g. a holder of
    /// handed-over sockets that restarts kube-gw on SIGHUP).
    pub fn start_wrapped(
        lab: &mut Lab,
        node: &Node,
        name: &str,
        config: &str,
        wrap: &[&str],
    ) -> Self {
        let socket = lab.path(&format!("{name}.sock"));
        let text = format!(
            "{config}\n[admin]\nsocket = \"{}\"\nmetrics = \"127.0.0.1:9472\"\n",
            socket.display()
        );
        let config = lab.write(&format!("{name}.toml"), &text);
        let cmd = unit_command(&[
            "run",
            "--log-format",
            "json",
            "-c",
            config.to_str().unwrap_or_default(),
        ]);
        let mut args: Vec<&str> = wrap.to_vec();
        let program = if wrap.is_empty() {
            "env"
        } else {
            args.remove(0)
        };
        if !wrap.is_empty() {
            args.push("env");
        }
        args.extend(cmd.iter().map(String::as_str));
        lab.spawn(node, name, program, &args);
        let k = KubeGw {
            name: name.to_string(),
            socket,
            config,
        };
        wait_for(
            &format!("{name} (kube-gw) to answer status"),
            START_TIMEOUT,
            || {
                assert!(
                    lab.running(name),
                    "kube-gw {name} exited:\n{}",
                    lab.log(name)
                );
                k.try_status()
            },
        );
        k
    }

    /// Runs a kube-gw CLI command against this instance; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "kube-gw {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The CLI's whole outcome (status, stdout, stderr), for commands that may fail.
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(Self::bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("kube-gw cli")
    }

    /// Starts it again after a stop, with the same configuration and socket.
    pub fn restart(&self, lab: &mut Lab, node: &Node) {
        let cmd = unit_command(&[
            "run",
            "--log-format",
            "json",
            "-c",
            self.config.to_str().unwrap_or_default(),
        ]);
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        lab.spawn(node, &self.name, "env", &args);
        wait_for(
            &format!("{} (kube-gw) to answer status again", self.name),
            START_TIMEOUT,
            || {
                assert!(
                    lab.running(&self.name),
                    "kube-gw {} exited:\n{}",
                    self.name,
                    lab.log(&self.name)
                );
                self.try_status()
            },
        );
    }

    /// `kube-gw status --json`, if it answers.
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = Command::new(Self::bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `kube-gw status --json` of this instance.
    pub fn status(&self) -> serde_json::Value {
        self.try_status()
            .unwrap_or_else(|| panic!("kube-gw {} does not answer status", self.name))
    }
}
