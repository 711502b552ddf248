//! The CLI's side of the admin socket: one request, one typed answer. Failures become the
//! message to print and the exit code (69 when the daemon cannot be reached).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::api::{Request, Response};
use crate::exit;

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

/// How long an ordinary request may take.
pub const TIMEOUT: Duration = Duration::from_secs(35);

/// Sends `req` to the daemon at `path` and waits at most `timeout`; a failure to reach it
/// is printed and becomes exit code 69.
pub fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("kube-gw: cannot start the async runtime: {e}");
            exit::FAILURE
        })?;
    rt.block_on(request(path, req, timeout)).map_err(|e| {
        eprintln!("kube-gw: {e}");
        exit::UNAVAILABLE
    })
}

/// [`call`], with the answer decoded as `T`; a refusal is printed and becomes exit code 1.
pub fn answer<T: DeserializeOwned>(
    path: &Path,
    req: &Request,
) -> Result<(T, serde_json::Value), u8> {
    let r = call(path, req, TIMEOUT)?;
    let raw = r.result.clone().unwrap_or(serde_json::Value::Null);
    match r.decode::<T>() {
        Ok(v) => Ok((v, raw)),
        Err(e) => {
            eprintln!("kube-gw: {e}");
            Err(exit::FAILURE)
        }
    }
}
