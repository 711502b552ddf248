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

/// Parses a log filter (`info`, `kube_gw::bgp=debug,warn`, `[bgp{neighbor=192.0.2.1}]=trace`).
/// A field value in a directive is matched as plain text, not as a regular expression:
/// tracing-subscriber builds a regex's full DFA up front, and a value like `2.*.....…`
/// made that cost gigabytes (found by the `config_parse` fuzz target). The one parser for
/// the configuration's `[log] level`, the start-up filter and `kube-gw log-level`.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|e| format!("`{filter}` is not a log filter: {e}"))
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
        let new = parse_filter(filter)?;
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
    let env = parse_filter(filter).map_err(|e| anyhow::anyhow!(e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Counts the events that get through the filter.
    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn passes(filter: &str, neighbor: &str) -> bool {
        let n = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry()
            .with(parse_filter(filter).unwrap())
            .with(Count(n.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("bgp", neighbor = %neighbor);
            let _g = span.enter();
            tracing::debug!("hello");
        });
        n.load(Ordering::Relaxed) == 1
    }

    /// A field value is plain text: `192.0.2.1` selects that neighbor only (a regex's `.`
    /// would also match `192x0x2x1`), and `.*` is no wildcard.
    #[test]
    fn field_values_in_a_filter_are_plain_text() {
        let f = "info,[bgp{neighbor=192.0.2.1}]=debug";
        assert!(passes(f, "192.0.2.1"), "the named neighbor's debug");
        assert!(!passes(f, "192x0x2x1"));
        assert!(!passes("info,[bgp{neighbor=.*}]=debug", "192.0.2.1"));
        assert!(passes("info,[bgp{neighbor=.*}]=debug", ".*"));
    }

    /// The `config_parse` fuzz target's out-of-memory input: a field value that, as a
    /// regex, needed gigabytes for its DFA. Now a filter like any other.
    #[test]
    fn a_field_value_that_was_a_costly_regex_parses() {
        let dots = ".".repeat(60);
        let f = format!("[NN04{{=0N4 {}.*{dots}3z3{dots}2}}]", "2".repeat(40));
        assert!(parse_filter(&f).is_ok(), "{f}");
    }
}
