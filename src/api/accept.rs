//! Accepting connections: plain TCP, or TLS when the port has a certificate. Handshakes run
//! in their own tasks (a client that stalls in one holds up nobody else) and are bounded by
//! a timeout; a failed handshake is logged at debug and counted, and the port keeps serving.
//! What the handshake learned (the client's verified certificate) travels with the
//! connection as [`ConnInfo`], which tonic and the REST listener put into every request's
//! extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;
use crate::security::tls::CertInfo;

/// What is known about the other end of a connection.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// Its certificate, verified against the port's CA, if it presented one.
    pub cert: Option<Arc<CertInfo>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection, plain or TLS.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    /// Its place under the listener's connection cap, given back when it closes.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Conn {
    /// What the handshake learned.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Completes the TLS handshake of an accepted stream, if the port has a certificate.
pub async fn handshake(
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    timeout: Duration,
    listener: &'static str,
    metrics: &Metrics,
) -> Option<Conn> {
    // Small frames must not wait for the peer's delayed ACK (ARCHITECTURE.md).
    let _ = tcp.set_nodelay(true);
    let remote = tcp.peer_addr().ok();
    let Some(config) = tls else {
        return Some(Conn {
            io: Io::Plain(tcp),
            info: ConnInfo { remote, cert: None },
            _slot: None,
        });
    };
    let accepted = tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(config).accept(tcp)).await;
    let failed = |why: &dyn std::fmt::Display| {
        metrics
            .tls_handshake_failures_total
            .with_label_values(&[listener])
            .inc();
        tracing::debug!(listener, remote = ?remote, error = %why, "TLS handshake failed");
        None
    };
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return failed(&"timed out"),
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| CertInfo::parse(der))
        .map(Arc::new);
    Some(Conn {
        io: Io::Tls(Box::new(stream)),
        info: ConnInfo { remote, cert },
        _slot: None,
    })
}

/// How a gRPC listener accepts.
pub struct Accept {
    /// The listener's name in metrics and logs.
    pub name: &'static str,
    /// Time a client has to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// Open connections at most (more are closed at once), and the `rejected_total` reason.
    pub max_connections: Option<(usize, &'static str)>,
}

/// The accepted (and handshaken) connections of a gRPC listener, for tonic's
/// `serve_with_incoming`. `tls` is asked at every connection, so rotated certificates
/// apply to the next handshake. Ends when the consumer drops it.
pub fn incoming(
    listener: TcpListener,
    tls: impl Fn() -> Option<Arc<ServerConfig>> + Send + 'static,
    accept: Accept,
    metrics: Metrics,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let Accept {
        name,
        handshake_timeout: timeout,
        max_connections,
    } = accept;
    let slots = max_connections.map(|(n, reason)| (Arc::new(Semaphore::new(n)), reason));
    // Handshaken connections wait here for tonic; a small queue is enough.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(listener = name, error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let slot = match &slots {
                None => None,
                Some((slots, reason)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => Some(slot),
                    Err(_) => {
                        metrics.rejected_total.with_label_values(&[reason]).inc();
                        drop(tcp);
                        continue;
                    }
                },
            };
            let (tx, config, metrics) = (tx.clone(), tls(), metrics.clone());
            tokio::spawn(async move {
                if let Some(mut conn) = handshake(tcp, config, timeout, name, &metrics).await {
                    conn._slot = slot;
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
