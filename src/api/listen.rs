//! Serving the REST router on its listener with the limits `axum::serve` does not set:
//! a header-read timeout (without a timer hyper never enforces one, so a client sending
//! headers a byte at a time holds its connection forever: slowloris) and a cap on open
//! connections. Built on hyper-util's connection builder, as `axum::serve` itself is.
//! With a certificate the listener speaks HTTPS (the handshake shares the header-read
//! timeout), and every request carries the connection's [`ConnInfo`] for authorization.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::accept::{self, ConnInfo};
use crate::metrics::Metrics;

/// The limits one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for open connections
/// to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Metrics,
    tls: impl Fn() -> Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.rejected_total.with_label_values(&["connections"]).inc();
            drop(tcp);
            continue;
        };
        let (builder, app, metrics, watcher) =
            (builder.clone(), app.clone(), metrics.clone(), graceful.watcher());
        let tls = tls();
        tokio::spawn(async move {
            let Some(conn) = accept::handshake(tcp, tls, limits.header_read_timeout, "http", &metrics).await
            else {
                return;
            };
            let info: ConnInfo = conn.info().clone();
            let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(app, info));
            let conn = watcher.watch(
                builder
                    .serve_connection_with_upgrades(TokioIo::new(conn), service)
                    .into_owned(),
            );
            if let Err(e) = conn.await {
                // A client that sent no headers in time (or sat idle past it) is the one
                // failure worth counting.
                if e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout)
                {
                    metrics
                        .rejected_total
                        .with_label_values(&["header_timeout"])
                        .inc();
                }
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
