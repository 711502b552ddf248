//! The command line: `run` (what systemd starts), `check-config`, `status`, `log-level`,
//! `reload`, `version`, and the generators for shell completion and man pages, all from one
//! clap definition so the three never disagree.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::admin::protocol::{Request, Response, Status};
use crate::config;
use crate::exit;
use crate::telemetry::{self, LogFormat};

/// kube-gw: Kubernetes Services on the fabric, served and announced by the switch itself.
#[derive(Debug, Parser)]
#[command(name = "kube-gw", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "KUBE_GW_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// Log output: journald under systemd and human text otherwise (auto), or forced.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "KUBE_GW_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter at start (overrides [log] level), e.g. `debug` or `kube_gw=debug,info`.
    #[arg(long, global = true, env = "KUBE_GW_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Admin socket of the running daemon (default: [admin] socket of the configuration).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (what the systemd unit starts).
    Run,
    /// Validate the configuration; exit 0 if valid, 78 if not.
    CheckConfig {
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's state.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the VIPs: their Services, whether programmed and announceable; refused addresses.
    Vips {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the BGP neighbors and what they were sent.
    Bgp {
        #[command(subcommand)]
        what: BgpCommand,
    },
    /// Show the cluster view the running daemon computes from.
    Cluster {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Change the running daemon's log filter.
    LogLevel {
        /// A level or filter directives, e.g. `debug` or `kube_gw=trace,info`.
        filter: String,
    },
    /// Ask the running daemon to re-read its configuration (as SIGHUP does).
    Reload,
    /// Take this switch out of the fabric for maintenance: every route is re-announced with
    /// GRACEFUL_SHUTDOWN (65535:0), `bgp.drain-time` later withdrawn, and the BGP sessions
    /// closed (Cease / Administrative Shutdown). Returns when done; `undrain` reverses it (so
    /// does a restart). Addresses and IPVS stay, so flows still arriving are served.
    Drain,
    /// Bring the BGP sessions back after `drain`.
    Undrain,
    /// Test hook: freeze the daemon's main loop for SECONDS (the watchdog test). Refused
    /// unless the daemon runs with KUBE_GW_TEST_HOOKS=1.
    #[command(hide = true)]
    DebugFreeze {
        /// How long to freeze.
        seconds: u64,
    },
    /// Print the version.
    Version {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (kube-gw.8 and one per subcommand) into a directory.
    Man {
        /// Output directory.
        out_dir: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(dispatch(cli))
}

fn dispatch(cli: Cli) -> u8 {
    let config_path = config::path_or_default(cli.config.clone());
    match &cli.command {
        Command::Run => run(&cli, &config_path),
        Command::CheckConfig { json } => check_config(&config_path, *json),
        Command::Status { json } => status(&cli, *json),
        Command::LogLevel { filter } => simple_request(
            &cli,
            &Request::SetLogLevel {
                filter: filter.clone(),
            },
            |r| {
                let prev = r.get("previous").and_then(|v| v.as_str()).unwrap_or("?");
                format!(
                    "log filter: {prev} -> {}",
                    r.get("current").and_then(|v| v.as_str()).unwrap_or("?")
                )
            },
        ),
        Command::Reload => reload(&cli),
        Command::Drain => drain(&cli, &Request::Drain),
        Command::Undrain => drain(&cli, &Request::Undrain),
        Command::DebugFreeze { seconds } => {
            simple_request(&cli, &Request::DebugFreeze { seconds: *seconds }, |v| {
                v.to_string()
            })
        }
        Command::Cluster { json } => cluster(&cli, *json),
        Command::Vips { json } => vips(&cli, *json),
        Command::Bgp { what } => bgp(&cli, what),
        Command::Version { json } => {
            let v = env!("CARGO_PKG_VERSION");
            if *json {
                println!("{}", serde_json::json!({ "name": "kube-gw", "version": v }));
            } else {
                println!("kube-gw {v}");
            }
            exit::OK
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "kube-gw", &mut std::io::stdout());
            exit::OK
        }
        Command::Man { out_dir } => match write_man_pages(out_dir) {
            Ok(n) => {
                println!("wrote {n} man pages to {}", out_dir.display());
                exit::OK
            }
            Err(e) => {
                eprintln!(
                    "kube-gw: cannot write man pages to {}: {e}",
                    out_dir.display()
                );
                exit::FAILURE
            }
        },
    }
}

fn check_config(path: &Path, json: bool) -> u8 {
    let result = config::load(path);
    let (valid, diags, summary) = match &result {
        Ok(l) => {
            let c = &l.config;
            let summary = format!(
                "{}: valid (node {}, {}, {}{})",
                path.display(),
                c.node.name.as_deref().unwrap_or("<hostname>"),
                plural(c.vip.pools.len(), "pool"),
                plural(
                    c.bgp.as_ref().map_or(0, |b| b.neighbors.len()),
                    "BGP neighbor"
                ),
                if l.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {}", plural(l.warnings.len(), "warning"))
                }
            );
            (true, l.warnings.clone(), summary)
        }
        Err(e) => (
            false,
            e.diagnostics.clone(),
            format!(
                "{}: invalid ({})",
                path.display(),
                plural(e.diagnostics.len(), "problem")
            ),
        ),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "path": path, "valid": valid, "diagnostics": diags })
        );
    } else {
        for d in &diags {
            eprintln!("{d}");
        }
        if valid {
            println!("{summary}");
        } else {
            eprintln!("{summary}");
        }
    }
    if valid {
        exit::OK
    } else {
        exit::CONFIG
    }
}

fn run(cli: &Cli, path: &Path) -> u8 {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "kube-gw: not starting: {} in the configuration",
                plural(e.diagnostics.len(), "problem")
            );
            return exit::CONFIG;
        }
    };
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| loaded.config.log.level.clone());
    let log = match telemetry::init(cli.log_format, &level) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("kube-gw: {e}");
            return exit::CONFIG;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!(problem = %w, "configuration warning");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube-gw")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-gw: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    let opts = crate::app::Options {
        config_path: path.to_path_buf(),
        test_hooks: std::env::var("KUBE_GW_TEST_HOOKS").as_deref() == Ok("1"),
    };
    match rt.block_on(crate::app::run(loaded.config, opts, log)) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!(error = %e, "kube-gw cannot start");
            eprintln!("kube-gw: {e}");
            exit::FAILURE
        }
    }
}

/// The admin socket to talk to: `--socket`, else the configuration's, else the default.
fn socket_path(cli: &Cli) -> PathBuf {
    if let Some(s) = &cli.socket {
        return s.clone();
    }
    let path = config::path_or_default(cli.config.clone());
    config::load(&path)
        .map(|l| l.config.admin.socket)
        .unwrap_or_else(|_| config::AdminConfig::default().socket)
}

fn request(cli: &Cli, req: &Request) -> Result<Response, u8> {
    request_within(cli, req, Duration::from_secs(35))
}

/// Sends one request to the daemon and waits at most `timeout` for the answer.
fn request_within(cli: &Cli, req: &Request, timeout: Duration) -> Result<Response, u8> {
    let path = socket_path(cli);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("kube-gw: cannot start the async runtime: {e}");
            exit::FAILURE
        })?;
    rt.block_on(crate::admin::socket::request(&path, req, timeout))
        .map_err(|e| {
            eprintln!("kube-gw: {e}");
            exit::UNAVAILABLE
        })
}

fn simple_request(cli: &Cli, req: &Request, show: impl Fn(&serde_json::Value) -> String) -> u8 {
    match request(cli, req) {
        Err(code) => code,
        Ok(r) if r.ok => {
            println!(
                "{}",
                show(r.result.as_ref().unwrap_or(&serde_json::Value::Null))
            );
            exit::OK
        }
        Ok(r) => {
            eprintln!(
                "kube-gw: {}",
                r.error.unwrap_or_else(|| "request failed".into())
            );
            exit::FAILURE
        }
    }
}

/// `kube-gw drain` / `undrain`: the drain waits as long as the daemon's drain time.
fn drain(cli: &Cli, req: &Request) -> u8 {
    // The drain time is at most 65535 s; the answer comes after it.
    let wait = Duration::from_secs(u64::from(u16::MAX) + 35);
    let r = match request_within(cli, req, wait) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if !r.ok {
        eprintln!("kube-gw: {}", r.error.unwrap_or_default());
        return exit::FAILURE;
    }
    let v = r.result.unwrap_or_default();
    match (v["state"].as_str(), v["already"].as_bool(), v["was_drained"].as_bool()) {
        (Some("drained"), Some(true), _) => println!("already drained"),
        (Some("drained"), _, _) => println!(
            "drained: routes re-announced with GRACEFUL_SHUTDOWN, withdrawn after {} s, BGP sessions closed; `kube-gw undrain` brings them back",
            v["drain_time"]
        ),
        (_, _, Some(false)) => println!("not drained; nothing to do"),
        _ => println!("undrained: the BGP sessions start again"),
    }
    exit::OK
}

fn reload(cli: &Cli) -> u8 {
    match request(cli, &Request::Reload) {
        Err(code) => code,
        Ok(r) => {
            let result = r.result.unwrap_or(serde_json::Value::Null);
            if let Some(msgs) = result.get("messages").and_then(|m| m.as_array()) {
                for m in msgs.iter().filter_map(|m| m.as_str()) {
                    eprintln!("{m}");
                }
            }
            if r.ok {
                println!(
                    "reload: {}",
                    result
                        .get("result")
                        .and_then(|v| v.as_str())
                        .unwrap_or("done")
                );
                exit::OK
            } else {
                eprintln!("kube-gw: {}", r.error.unwrap_or_default());
                exit::CONFIG
            }
        }
    }
}

/// `kube-gw bgp …`.
#[derive(Debug, Subcommand)]
pub enum BgpCommand {
    /// Each neighbor: session state, AS, uptime, prefixes sent and received, last error.
    Neighbors {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The routes sent to each neighbor (Adj-RIB-Out). Import is deny-all: nothing received
    /// is kept.
    Routes {
        /// Only this neighbor (its address).
        #[arg(long)]
        neighbor: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn bgp(cli: &Cli, what: &BgpCommand) -> u8 {
    use crate::admin::protocol::{BgpNeighborRow, BgpRoutes};
    use std::fmt::Write as _;
    let (req, json) = match what {
        BgpCommand::Neighbors { json } => (Request::BgpNeighbors, *json),
        BgpCommand::Routes { neighbor, json } => (
            Request::BgpRoutes {
                neighbor: neighbor.clone(),
            },
            *json,
        ),
    };
    let r = match request(cli, &req) {
        Err(code) => return code,
        Ok(r) => r,
    };
    let Some(result) = r.result.filter(|_| r.ok) else {
        eprintln!(
            "kube-gw: {}",
            r.error.unwrap_or_else(|| "bgp failed".into())
        );
        return exit::FAILURE;
    };
    if json {
        println!("{result}");
        return exit::OK;
    }
    let mut o = String::new();
    match what {
        BgpCommand::Neighbors { .. } => {
            let Ok(rows) = serde_json::from_value::<Vec<BgpNeighborRow>>(result) else {
                eprintln!("kube-gw: the answer is not understood; try --json");
                return exit::FAILURE;
            };
            let _ = writeln!(
                o,
                "{:<28} {:<12} {:<11} {:>9} {:>6} {:>6} {:>9}  Last error",
                "Neighbor", "State", "AS", "Up (s)", "Sent", "Rcvd", "Updates"
            );
            for n in rows {
                let _ = writeln!(
                    o,
                    "{:<28} {:<12} {:<11} {:>9} {:>6} {:>6} {:>9}  {}",
                    n.address,
                    n.state,
                    n.peer_as.map(|a| a.to_string()).unwrap_or_default(),
                    n.uptime_seconds,
                    n.prefixes_sent,
                    n.prefixes_received,
                    n.updates_received,
                    n.last_error.unwrap_or_default()
                );
                if let Some(e) = n.last_update_error {
                    let _ = writeln!(o, "{:<28} {} UPDATE errors, last: {e}", "", n.update_errors);
                }
            }
        }
        BgpCommand::Routes { .. } => {
            let Ok(routes) = serde_json::from_value::<BgpRoutes>(result) else {
                eprintln!("kube-gw: the answer is not understood; try --json");
                return exit::FAILURE;
            };
            for n in routes.neighbors {
                let _ = writeln!(
                    o,
                    "{} ({} sent, {} received)",
                    n.neighbor,
                    n.sent.len(),
                    n.received.len()
                );
                for p in n.sent {
                    let _ = writeln!(o, "  sent      {p}");
                }
                for p in n.received {
                    let _ = writeln!(o, "  received  {p}");
                }
            }
        }
    }
    print!("{o}");
    exit::OK
}

fn vips(cli: &Cli, json: bool) -> u8 {
    let r = match request(cli, &Request::Vips) {
        Err(code) => return code,
        Ok(r) => r,
    };
    let Some(result) = r.result.filter(|_| r.ok) else {
        eprintln!(
            "kube-gw: {}",
            r.error.unwrap_or_else(|| "vips failed".into())
        );
        return exit::FAILURE;
    };
    if json {
        println!("{result}");
        return exit::OK;
    }
    match serde_json::from_value::<crate::admin::protocol::Vips>(result) {
        Ok(v) => {
            print!("{}", render_vips(&v));
            exit::OK
        }
        Err(e) => {
            eprintln!("kube-gw: the answer is not understood ({e}); try --json");
            exit::FAILURE
        }
    }
}

/// The `vips` table.
pub fn render_vips(v: &crate::admin::protocol::Vips) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<28} {:<12} {:<13} {:<8} {:<36} Ports",
        "VIP", "State", "Announce", "Ready", "Services"
    );
    for r in &v.vips {
        let state = if r.programmed {
            "programmed"
        } else if r.foreign {
            "foreign"
        } else {
            "pending"
        };
        let _ = writeln!(
            o,
            "{:<28} {:<12} {:<13} {:<8} {:<36} {}",
            r.address,
            state,
            if r.announceable { "yes" } else { "no" },
            r.ready_endpoints,
            r.services.join(","),
            r.ports.join(",")
        );
    }
    if !v.refused.is_empty() {
        let _ = writeln!(o, "\nRefused:");
        for r in &v.refused {
            let _ = writeln!(o, "  {:<28} {:<36} {}", r.address, r.service, r.reason);
        }
    }
    if let Some(e) = &v.error {
        let _ = writeln!(o, "\naddress reconciler: {e}");
    }
    let _ = writeln!(o, "{} VIPs on {}", v.vips.len(), v.interface);
    o
}

fn cluster(cli: &Cli, json: bool) -> u8 {
    let r = match request(cli, &Request::Cluster) {
        Err(code) => return code,
        Ok(r) => r,
    };
    let Some(result) = r.result.filter(|_| r.ok) else {
        eprintln!(
            "kube-gw: {}",
            r.error.unwrap_or_else(|| "cluster failed".into())
        );
        return exit::FAILURE;
    };
    if json {
        println!("{result}");
        return exit::OK;
    }
    print!("{}", render_cluster(&result));
    exit::OK
}

/// The `cluster` table: one line per Service with its addresses and endpoint readiness.
pub fn render_cluster(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let empty = serde_json::Map::new();
    let services = v["services"].as_object().unwrap_or(&empty);
    let slices = v["endpoint_slices"].as_object().unwrap_or(&empty);
    let list = |x: &serde_json::Value| {
        let items: Vec<String> = x
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(",")
        }
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<40} {:<13} {:<24} {:<24} {:<16} Endpoints",
        "Service", "Type", "External IPs", "LB IPs", "Ports"
    );
    for (key, s) in services {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let (mut ready, mut total) = (0, 0);
        for slice in slices.values().filter(|sl| {
            sl["key"]
                .as_str()
                .is_some_and(|k| k.starts_with(&format!("{ns}/")))
                && sl["service"].as_str() == Some(name)
        }) {
            for e in slice["endpoints"].as_array().into_iter().flatten() {
                total += 1;
                if e["ready"].as_bool() == Some(true) {
                    ready += 1;
                }
            }
        }
        let ports: Vec<String> = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["port"],
                    p["protocol"].as_str().unwrap_or("?").to_lowercase()
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "{:<40} {:<13} {:<24} {:<24} {:<16} {ready}/{total} ready",
            key,
            s["type_"].as_str().unwrap_or("?"),
            list(&s["external_ips"]),
            list(&s["load_balancer_ips"]),
            if ports.is_empty() {
                "-".into()
            } else {
                ports.join(",")
            },
        );
    }
    let _ = writeln!(
        o,
        "{} services, {} endpoint slices, {} nodes",
        services.len(),
        slices.len(),
        v["nodes"].as_object().map_or(0, serde_json::Map::len)
    );
    o
}

fn status(cli: &Cli, json: bool) -> u8 {
    let r = match request(cli, &Request::Status) {
        Err(code) => return code,
        Ok(r) => r,
    };
    let Some(result) = r.result.filter(|_| r.ok) else {
        eprintln!(
            "kube-gw: {}",
            r.error.unwrap_or_else(|| "status failed".into())
        );
        return exit::FAILURE;
    };
    if json {
        println!("{result}");
        return exit::OK;
    }
    match serde_json::from_value::<Status>(result) {
        Ok(s) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(render_status(&s).as_bytes());
            exit::OK
        }
        Err(e) => {
            eprintln!("kube-gw: the daemon's status is not understood ({e}); is it the same version? try --json");
            exit::FAILURE
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Formats seconds as `1d2h`, `3h4m`, `5m6s` or `7s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The `status` table, in the spirit of `birdc show protocols`.
pub fn render_status(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "kube-gw {} (pid {}): {}, {}, up {}",
        s.version,
        s.pid,
        state,
        if s.ready { "ready" } else { "not ready" },
        human_duration(s.uptime_seconds)
    );
    let reload = match &s.config.last_reload {
        None => "no reload yet".to_string(),
        Some(r) => format!(
            "last reload {} {} ago",
            r.result,
            human_duration(r.seconds_ago)
        ),
    };
    let _ = writeln!(
        o,
        "config {} (generation {}), {}",
        s.config.path, s.config.generation, reload
    );
    if let Some(r) = &s.config.last_reload {
        for m in &r.messages {
            let _ = writeln!(o, "  {m}");
        }
    }
    let _ = writeln!(o, "log filter {}", s.log_filter);
    let _ = writeln!(o);
    let w = s
        .components
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        o,
        "{:<w$}  {:<8} {:<11} {:<8} Info",
        "Name", "Kind", "State", "Since"
    );
    for c in &s.components {
        let _ = writeln!(
            o,
            "{:<w$}  {:<8} {:<11} {:<8} {}",
            c.name,
            c.kind,
            c.state,
            human_duration(c.since_seconds),
            c.info
        );
    }
    o
}

fn write_man_pages(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut n = 0;
    let mut write = |name: String, cmd: clap::Command| -> std::io::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).section("8").render(&mut buf)?;
        std::fs::write(dir.join(format!("{name}.8")), buf)?;
        n += 1;
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("kube-gw-{}", sub.get_name());
        write(name.clone(), sub.clone().name(name))?;
    }
    write("kube-gw".into(), cmd)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_read_like_birdc() {
        assert_eq!(human_duration(7), "7s");
        assert_eq!(human_duration(366), "6m6s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h4m");
        assert_eq!(human_duration(90000), "1d1h");
    }
}
