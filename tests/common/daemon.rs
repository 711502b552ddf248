//! A kube-gw process for tests: started with a generated config and a notify socket the
//! test reads, talked to through its CLI and admin socket, killed (by pid) when dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kube-gw");

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    notify: UnixDatagram,
    /// Every notify message received so far, with its arrival time.
    pub messages: Vec<(Instant, String)>,
}

/// A small valid configuration with the admin socket at `socket`.
pub fn config_text(socket: &Path, level: &str) -> String {
    format!(
        r#"[node]
name = "spine-1"

[vip]
pools = ["198.51.100.0/24"]

[bgp]
asn = 65010
router-id = "192.0.2.20"

[admin]
socket = "{}"
metrics = "127.0.0.1:0"

[log]
level = "{level}"
"#,
        socket.display()
    )
}

impl Daemon {
    /// Starts kube-gw with [`config_text`].
    pub fn start(envs: &[(&str, &str)]) -> Self {
        Self::start_with(|socket, _| config_text(socket, "info"), envs)
    }

    /// Starts kube-gw with the configuration `config(admin socket, directory)` returns, and
    /// waits for READY=1.
    pub fn start_with(config: impl FnOnce(&Path, &Path) -> String, envs: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let text = config(&socket, dir.path());
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = std::fs::File::create(dir.path().join("log.json")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--log-format", "json", "-c"])
            .arg(dir.path().join("config.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            dir,
            child,
            notify,
            messages: Vec::new(),
        };
        d.wait_for_message("READY=1", Duration::from_secs(15));
        d
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// Reads notify messages until `deadline`.
    pub fn pump_until(&mut self, deadline: Instant) {
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in text.lines() {
                    self.messages.push((Instant::now(), line.to_string()));
                }
            }
        }
    }

    /// Waits for a notify line that equals `want`, after the ones already seen.
    pub fn wait_for_message(&mut self, want: &str, timeout: Duration) {
        let seen = self.messages.len();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.notify.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                for line in text.lines() {
                    self.messages.push((Instant::now(), line.to_string()));
                }
                if self.messages[seen..].iter().any(|(_, m)| m == want) {
                    return;
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("kube-gw exited ({st}) before {want}; log:\n{}", self.log());
            }
        }
        panic!(
            "no {want} within {timeout:?}; got {:?}; log:\n{}",
            self.messages,
            self.log()
        );
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(self.path("admin.sock"))
            .output()
            .unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn http_addr(&self) -> String {
        let s = self.status();
        let info = s["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "http")
            .unwrap()["info"]
            .as_str()
            .unwrap()
            .to_string();
        info.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    }

    pub fn admin_raw(&self, request: &str) -> serde_json::Value {
        let mut s = UnixStream::connect(self.path("admin.sock")).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.write_all(b"\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log.json")).unwrap_or_default()
    }

    pub fn log_records(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                // What it sent just before exiting may still wait in the socket.
                self.pump_until(Instant::now() + Duration::from_millis(50));
                return st;
            }
            self.pump_until(Instant::now() + Duration::from_millis(50));
        }
        panic!("kube-gw did not exit within {timeout:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Stop the process we started, by its pid, whatever the test's outcome.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}
