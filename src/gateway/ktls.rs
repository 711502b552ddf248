//! Kernel TLS for the gateway's terminated connections.
//!
//! After rustls finishes a handshake, the session's keys and sequence numbers go to the kernel
//! (`TCP_ULP "tls"`, `TLS_TX` and `TLS_RX`, done by the `ktls` crate, which also drains what
//! rustls had already decrypted); from then on the socket reads and writes plaintext and the
//! kernel encrypts (TLS 1.3 and 1.2; AES-GCM-128/256, ChaCha20-Poly1305 where the kernel has
//! them). What the kernel supports is probed once at start ([`probe`]); a connection whose
//! cipher the kernel lacks stays in userspace rustls.
//!
//! Reads are kube-gw's own ([`KernelTls`]), not the crate's stream: a record that is not
//! application data (an alert, close_notify, or a peer's KeyUpdate, which kernels before 6.13
//! cannot follow) makes `read` fail with `EIO` when no control-message buffer is given; that
//! ends this one connection as an end of stream, cleanly, whatever the peer sent: the
//! shutdown that follows sends a close_notify alert (sealed by the kernel) before the FIN.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the kernel can take over, per TLS version and cipher.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KtlsSupport {
    /// Why kernel TLS is off, when it is.
    pub unavailable: Option<String>,
    /// `TLS1.3 AES-128-GCM`, … (what the probe accepted).
    pub ciphers: Vec<String>,
}

/// The probe's result with the crate's own view, for deciding per connection.
pub struct Probe {
    pub support: KtlsSupport,
    pub ciphers: Option<ktls::CompatibleCiphers>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.support.fmt(f)
    }
}

/// Probes the kernel once (a loopback connection per cipher: `TCP_ULP "tls"` and `TLS_TX`).
pub async fn probe() -> Probe {
    match ktls::CompatibleCiphers::new().await {
        Ok(c) => {
            let mut names = Vec::new();
            for (v, f) in [("TLS1.3", &c.tls13), ("TLS1.2", &c.tls12)] {
                for (ok, name) in [
                    (f.aes_gcm_128, "AES-128-GCM"),
                    (f.aes_gcm_256, "AES-256-GCM"),
                    (f.chacha20_poly1305, "CHACHA20-POLY1305"),
                ] {
                    if ok {
                        names.push(format!("{v} {name}"));
                    }
                }
            }
            let unavailable = names
                .is_empty()
                .then(|| "the kernel has no usable `tls` module (modprobe tls)".to_string());
            Probe {
                support: KtlsSupport {
                    unavailable,
                    ciphers: names,
                },
                ciphers: Some(c),
            }
        }
        Err(e) => Probe {
            support: KtlsSupport {
                unavailable: Some(format!("probing kernel TLS failed: {e}")),
                ciphers: Vec::new(),
            },
            ciphers: None,
        },
    }
}

/// A connection whose TLS records the kernel handles.
#[derive(Debug)]
pub struct KernelTls {
    /// Plaintext rustls had decrypted before the switch, served first.
    drained: Vec<u8>,
    at: usize,
    inner: TcpStream,
    /// The close_notify alert went (once, at shutdown).
    notified: bool,
}

impl KernelTls {
    /// Hands a finished handshake to the kernel.
    pub async fn from_rustls(
        tls: tokio_rustls::server::TlsStream<ktls::CorkStream<TcpStream>>,
    ) -> Result<Self, ktls::Error> {
        let (drained, inner) = ktls::config_ktls_server(tls).await?.into_raw();
        Ok(Self {
            drained: drained.unwrap_or_default(),
            at: 0,
            inner,
            notified: false,
        })
    }
}

impl AsyncRead for KernelTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.drained.len() {
            let n = buf.remaining().min(this.drained.len() - this.at);
            buf.put_slice(&this.drained[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // A control record (alert, close_notify, KeyUpdate): the end of this connection.
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for KernelTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// A close_notify alert (sealed by the kernel), then the TCP FIN: the peer sees the TLS
    /// session end as it should, also when it ends because the kernel could not follow the
    /// peer's KeyUpdate.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.notified {
            this.notified = true;
            if let Err(e) = kube_gw_sockopt::send_tls_close_notify(&this.inner) {
                tracing::debug!("gateway: close_notify not sent: {e}");
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
