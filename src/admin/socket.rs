//! The admin Unix socket: server side (in the daemon) and client side (in the CLI).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::Instrument;

use super::protocol::{Request, Response};
use crate::app::Shared;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another kube-gw is already running: its admin socket {path} answers; stop it first or set [admin] socket to another path")]
    InUse { path: PathBuf },
    #[error("cannot create the admin socket {path}: {source}; check that its directory is writable (systemd's RuntimeDirectory=kube-gw does this)")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the socket with mode 0660, removing a stale socket file left by a crash.
pub async fn bind(path: &Path) -> Result<UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    Ok(listener)
}

/// Serves until `stop` turns true, then removes the socket file.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = crate::lifecycle::stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(stream, &shared).await {
                            tracing::debug!(error = %e, "admin: connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "admin: cannot remove the socket");
    }
}

async fn handle(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(MAX_REQUEST);
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => Response::err("no request within 5 s"),
        Ok(Err(e)) => Response::err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let span = tracing::debug_span!("admin", request = ?req);
                shared.handle_admin(req).instrument(span).await
            }
            Err(e) => Response::err(format!("not a valid request: {e}")),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

/// Client side: why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach kube-gw at {path}: {source} — is the daemon running (systemctl status kube-gw)? is --socket right? (you need to be root or in the socket's group)")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to kube-gw at {path} failed: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kube-gw at {path} sent an answer that is not understood: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Sends one request and waits (at most `timeout`) for the answer.
pub async fn request(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let (r, mut w) = stream.into_split();
    let mut body = serde_json::to_vec(req).map_err(|e| io(io::Error::other(e)))?;
    body.push(b'\n');
    w.write_all(&body).await.map_err(io)?;
    let mut line = String::new();
    tokio::time::timeout(timeout, BufReader::new(r).read_line(&mut line))
        .await
        .map_err(|_| io(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")))?
        .map_err(io)?;
    serde_json::from_str(&line).map_err(|source| ClientError::Decode {
        path: path.to_path_buf(),
        source,
    })
}
