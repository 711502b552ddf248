//! The command line: `run` (what systemd starts), `check-config`, the commands that ask the
//! running daemon (`status`, `vips`, `bgp`, `cluster`, `log-level`, `reload`, `drain`,
//! `undrain`), `version`, and the generators for shell completion and man pages — all from
//! one clap definition, so the three never disagree.
//!
//! - this file: the definitions and what each command does;
//! - [`client`]: the admin socket client (typed answers from [`crate::api`]);
//! - [`render`]: the tables.

pub mod client;
pub mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::api::{
    BfdSessions, BgpNeighbors, BgpRoutes, ClusterView, DrainAnswer, Frozen, GatewayView,
    LogFilterChanged, Reloaded, Request, Status, Vips,
};
use crate::config;
use crate::exit;
use crate::telemetry::{self, LogFormat};
use render::plural;

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
        /// Do not look at the files the configuration names (kubeconfig, CA, token,
        /// passwords): for checking a configuration before it reaches the switch.
        #[arg(long)]
        skip_files: bool,
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
    /// Show the BFD sessions (state, intervals, diagnostics, uptime), or take one
    /// administratively down or back up.
    Bfd {
        #[command(subcommand)]
        what: Option<BfdCommand>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the L7 gateway: how VIP:ports are steered, what each serves (routes,
    /// certificates), and the Gateways' states.
    Gateway {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    /// Test hook: stop one of the daemon's loops from turning for SECONDS (the watchdog
    /// tests). Refused unless the daemon runs with KUBE_GW_TEST_HOOKS=1.
    #[command(hide = true)]
    DebugFreeze {
        /// How long to freeze.
        seconds: u64,
        /// Which loop (as `status` lists them, without `-loop`); default `main`.
        #[arg(long = "loop", value_name = "NAME")]
        loop_name: Option<String>,
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
    // Before anything opens a descriptor: the sockets systemd may have passed.
    crate::gateway::steer::take_handed_over();
    let cli = Cli::parse();
    ExitCode::from(dispatch(cli))
}

fn dispatch(cli: Cli) -> u8 {
    let config_path = config::path_or_default(cli.config.clone());
    let socket = || socket_path(&cli);
    match &cli.command {
        Command::Run => run(&cli, &config_path),
        Command::CheckConfig { json, skip_files } => {
            let files = if *skip_files {
                config::FileChecks::Skip
            } else {
                config::FileChecks::Check
            };
            check_config(&config_path, *json, files)
        }
        Command::Status { json } => {
            show::<Status>(&socket(), &Request::Status, *json, render::status)
        }
        Command::Vips { json } => show::<Vips>(&socket(), &Request::Vips, *json, render::vips),
        Command::Cluster { json } => {
            show::<ClusterView>(&socket(), &Request::Cluster, *json, render::cluster)
        }
        Command::Bgp { what } => match what {
            BgpCommand::Neighbors { json } => show::<BgpNeighbors>(
                &socket(),
                &Request::BgpNeighbors,
                *json,
                render::bgp_neighbors,
            ),
            BgpCommand::Routes { neighbor, json } => show::<BgpRoutes>(
                &socket(),
                &Request::BgpRoutes {
                    neighbor: neighbor.clone(),
                },
                *json,
                render::bgp_routes,
            ),
        },
        Command::Bfd { what, json } => {
            let req = match what {
                None => Request::Bfd,
                Some(BfdCommand::AdminDown { neighbor }) => Request::BfdAdmin {
                    neighbor: neighbor.clone(),
                    down: true,
                },
                Some(BfdCommand::AdminUp { neighbor }) => Request::BfdAdmin {
                    neighbor: neighbor.clone(),
                    down: false,
                },
            };
            show::<BfdSessions>(&socket(), &req, *json, render::bfd)
        }
        Command::Gateway { json } => {
            show::<GatewayView>(&socket(), &Request::Gateway, *json, render::gateway)
        }
        Command::LogLevel { filter } => show::<LogFilterChanged>(
            &socket(),
            &Request::SetLogLevel {
                filter: filter.clone(),
            },
            false,
            |c| format!("log filter: {} -> {}\n", c.previous, c.current),
        ),
        Command::Reload => reload(&socket()),
        Command::Drain => drain(&socket(), &Request::Drain),
        Command::Undrain => drain(&socket(), &Request::Undrain),
        Command::DebugFreeze { seconds, loop_name } => show::<Frozen>(
            &socket(),
            &Request::DebugFreeze {
                seconds: *seconds,
                loop_name: loop_name.clone(),
            },
            false,
            |f| format!("loop {} frozen for {} s\n", f.loop_name, f.seconds),
        ),
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

/// Asks the daemon and prints the answer: as the daemon sent it with `--json`, else as
/// `table` renders the typed answer.
fn show<T: serde::de::DeserializeOwned>(
    socket: &Path,
    req: &Request,
    json: bool,
    table: impl Fn(&T) -> String,
) -> u8 {
    match client::answer::<T>(socket, req) {
        Err(code) => code,
        Ok((answer, raw)) => {
            if json {
                println!("{raw}");
            } else {
                print!("{}", table(&answer));
            }
            exit::OK
        }
    }
}

fn check_config(path: &Path, json: bool, files: config::FileChecks) -> u8 {
    let result = config::load_with(path, files);
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

/// `kube-gw drain` / `undrain`: the drain waits as long as the daemon's drain time.
fn drain(socket: &Path, req: &Request) -> u8 {
    // The drain time is at most 65535 s; the answer comes after it.
    let wait = Duration::from_secs(u64::from(u16::MAX)) + client::TIMEOUT;
    let answer = match client::call(socket, req, wait).map(|r| r.decode::<DrainAnswer>()) {
        Err(code) => return code,
        Ok(Err(e)) => {
            eprintln!("kube-gw: {e}");
            return exit::FAILURE;
        }
        Ok(Ok(a)) => a,
    };
    match answer {
        DrainAnswer::AlreadyDrained => println!("already drained"),
        DrainAnswer::Drained { drain_time } => println!(
            "drained: routes re-announced with GRACEFUL_SHUTDOWN, withdrawn after {drain_time} s, BGP sessions closed; `kube-gw undrain` brings them back"
        ),
        DrainAnswer::NotDrained => println!("not drained; nothing to do"),
        DrainAnswer::Undrained => println!("undrained: the BGP sessions start again"),
    }
    exit::OK
}

/// `kube-gw reload`: the problems of a refused configuration go to stderr, exit 78.
fn reload(socket: &Path) -> u8 {
    let r = match client::call(socket, &Request::Reload, client::TIMEOUT) {
        Err(code) => return code,
        Ok(r) => r,
    };
    if let Some(d) = r.details::<Reloaded>() {
        for m in &d.messages {
            eprintln!("{m}");
        }
    }
    let refused = r
        .details::<Reloaded>()
        .is_some_and(|d| d.result == "rejected");
    match r.decode::<Reloaded>() {
        Ok(d) => {
            println!("reload: {} (generation {})", d.result, d.generation);
            exit::OK
        }
        Err(e) => {
            eprintln!("kube-gw: {e}");
            if refused {
                exit::CONFIG
            } else {
                exit::FAILURE
            }
        }
    }
}

/// `kube-gw bfd …`.
#[derive(Debug, Subcommand)]
pub enum BfdCommand {
    /// Take a neighbor's BFD session administratively down: its peer is told (AdminDown)
    /// and keeps its BGP session (RFC 5882 §3.2); kube-gw's BGP session no longer follows
    /// BFD until `admin-up`.
    AdminDown {
        /// The neighbor, as `kube-gw bfd` names it.
        neighbor: String,
    },
    /// Bring a neighbor's BFD session back after `admin-down`.
    AdminUp {
        /// The neighbor, as `kube-gw bfd` names it.
        neighbor: String,
    },
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
}
