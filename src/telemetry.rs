//! Logging: tracing with one span per entity, written to journald when systemd started us
//! (`JOURNAL_STREAM` names our stderr), to stderr as human text otherwise, or as JSON lines
//! on request. The filter sits behind a reload handle so the admin API can change the level
//! of a running daemon.

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald under systemd, human-readable stderr otherwise.
    Auto,
    /// Human-readable lines on stderr.
    Human,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal's native protocol.
    Journald,
}

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogHandle {
    inner: reload::Handle<EnvFilter, Registry>,
    current: std::sync::Arc<std::sync::Mutex<String>>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("filter", &self.filter())
            .finish()
    }
}

impl LogHandle {
    /// Replaces the filter; returns the previous one. A filter that does not parse is
    /// refused and the old one stays.
    pub fn set(&self, filter: &str) -> Result<String, String> {
        let new = EnvFilter::builder()
            .parse(filter)
            .map_err(|e| format!("`{filter}` is not a log filter: {e}"))?;
        self.inner
            .reload(new)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        Ok(std::mem::replace(&mut *cur, filter.to_string()))
    }

    /// The filter in force.
    pub fn filter(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// True when stderr is the journal stream systemd handed us.
pub fn stderr_is_journal() -> bool {
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = var.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the global subscriber. Called once, at start-up.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<LogHandle> {
    let env = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| anyhow::anyhow!("`{filter}` is not a log filter: {e}"))?;
    let (filter_layer, handle) = reload::Layer::new(env);
    let format = match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Human,
        f => f,
    };
    type Inner = tracing_subscriber::layer::Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let output: Box<dyn Layer<Inner> + Send + Sync> = match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(l) => Box::new(l.with_syslog_identifier("kube-gw".into())),
            Err(e) => {
                eprintln!("kube-gw: journald is not reachable ({e}); logging to stderr");
                Box::new(human())
            }
        },
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(std::io::stderr),
        ),
        LogFormat::Human | LogFormat::Auto => Box::new(human()),
    };
    tracing_subscriber::registry()
        .with(filter_layer)
        .with(output)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    Ok(LogHandle {
        inner: handle,
        current: std::sync::Arc::new(std::sync::Mutex::new(filter.to_string())),
    })
}

fn human<S>() -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
}
