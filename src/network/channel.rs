//! The peer channel: one HTTP/2 connection per peer, driven with the `h2` crate, under
//! tonic's generated client (tonic still encodes, decodes, maps statuses and deadlines).
//!
//! Why not tonic's own `Channel` (hyper's HTTP/2 client behind a buffer task): it writes
//! every request as two TCP writes — HEADERS at once, DATA only after a separate body task
//! is woken with flow-control capacity — so the follower wakes, reads and sleeps twice per
//! AppendEntries, and the buffer adds a task hop each way. Here a unary request's HEADERS
//! and DATA are queued together and leave in one write (`strace`: one `writev` per
//! AppendEntries instead of two; README, Performance, has the effect on latency).
//!
//! The connection is opened on first use, resolved afresh each time (a pod that moved is
//! found at its new address), pinged every [`LinkTiming::keepalive_interval`] and dropped
//! when a ping goes unanswered for [`LinkTiming::keepalive_timeout`] or the connection
//! fails; the next call dials again. The pings are on the scale of the election timeout,
//! not TCP's: a partition drops packets silently, and a connection that only TCP watched
//! kept Raft RPCs queued on it for seconds after the network healed (retransmission
//! backoff), holding an election up. After a failed dial or an unanswered ping the link is
//! *down*: calls fail at once, marked not-applied, instead of each waiting out its own
//! connect timeout, and one call per [`LinkTiming::retry_after`] dials again to find out
//! whether the peer is back. Calls are bounded by the callers' own timeouts.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tonic::Status;

use crate::discovery::HostResolver;
use crate::security::Security;

/// How a channel watches its link; [`LinkTiming::for_raft`] derives it from Raft's timers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkTiming {
    /// Bounds a dial: the TCP connect, the TLS and the HTTP/2 handshake, each.
    pub connect_timeout: Duration,
    /// How often a connection is pinged.
    pub keepalive_interval: Duration,
    /// A ping unanswered this long closes the connection (a peer cut off by a partition).
    pub keepalive_timeout: Duration,
    /// After a failure, calls fail at once for this long before one dials again.
    pub retry_after: Duration,
}

impl LinkTiming {
    /// Timing on the scale of the election timeout: a dead link is noticed within half of
    /// `election_timeout_min`, well before followers elect a new leader, so by then the
    /// links an election needs are fresh. Floors keep a loaded host's scheduling delays
    /// from tearing down healthy connections; `rpc_timeout` caps the dial.
    pub fn for_raft(heartbeat: Duration, election_timeout_min: Duration, rpc_timeout: Duration) -> Self {
        let detect = (election_timeout_min / 2).max(Duration::from_millis(100));
        LinkTiming {
            connect_timeout: detect.min(rpc_timeout),
            keepalive_interval: heartbeat
                .max(election_timeout_min / 4)
                .max(Duration::from_millis(20)),
            keepalive_timeout: detect,
            retry_after: heartbeat.max(Duration::from_millis(20)),
        }
    }
}
/// Request bytes gathered before the first write; a longer body (a snapshot stream) is
/// sent on with flow control from its own task.
const INLINE_BODY_BYTES: usize = 64 << 10;
/// HTTP/2 windows: large enough that a 1 MiB snapshot chunk is not throttled per frame.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;

/// A cheap-to-clone channel to one peer address.
#[derive(Clone)]
pub struct PeerChannel {
    inner: Arc<Inner>,
}

struct Inner {
    /// host:port, as given (also what errors name).
    authority: http::uri::Authority,
    port: u16,
    resolver: HostResolver,
    timing: LinkTiming,
    /// Peer TLS, if on; its generation changes when the certificates are rotated.
    security: Arc<Security>,
    /// Since when the link is down and why (a failed dial or an unanswered ping); cleared
    /// by a successful dial. Shared with the keepalive task.
    down: Arc<Mutex<Option<(Instant, String)>>>,
    /// The live connection, if any, and the TLS generation it was dialled with. Held across
    /// a dial so concurrent callers share it.
    conn: tokio::sync::Mutex<Option<(h2::client::SendRequest<Bytes>, u64)>>,
}

impl PeerChannel {
    /// A channel to `addr` (host:port); nothing is dialled until the first call.
    pub fn new(
        addr: &str,
        resolver: HostResolver,
        timing: LinkTiming,
        security: Arc<Security>,
    ) -> Result<Self, Status> {
        let authority: http::uri::Authority = addr
            .parse()
            .map_err(|e| Status::invalid_argument(format!("bad peer address `{addr}`: {e}")))?;
        let Some(port) = authority.port_u16() else {
            return Err(Status::invalid_argument(format!(
                "bad peer address `{addr}`: no port"
            )));
        };
        Ok(PeerChannel {
            inner: Arc::new(Inner {
                authority,
                port,
                resolver,
                timing,
                security,
                down: Arc::default(),
                conn: tokio::sync::Mutex::new(None),
            }),
        })
    }

    fn addr(&self) -> &str {
        self.inner.authority.as_str()
    }

    /// Why the link is down, if it is (a failed dial or an unanswered ping, not followed by
    /// a successful dial).
    pub fn down(&self) -> Option<String> {
        let down = self.inner.down.lock().unwrap_or_else(PoisonError::into_inner);
        down.as_ref()
            .map(|(at, why)| format!("{why} ({:?} ago)", at.elapsed()))
    }

    /// A sender on the live connection, dialling one if there is none (or it died).
    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
        let arrived = Instant::now();
        let mut conn = self.inner.conn.lock().await;
        let generation = self.inner.security.peer_generation();
        if let Some((tx, dialled_with)) = conn.as_ref() {
            if *dialled_with != generation {
                // Rotated certificates: new calls go over a new handshake; calls in flight
                // finish on the old connection, which closes once they are done.
                tracing::debug!(peer = %self.addr(), "peer TLS changed; dialling again");
                *conn = None;
            } else {
                match tx.clone().ready().await {
                    Ok(tx) => return Ok(tx),
                    Err(e) => {
                        tracing::debug!(peer = %self.addr(), error = %e, "peer connection closed; dialling again");
                        *conn = None;
                    }
                }
            }
        }
        if conn.is_none()
            && let Some(why) = self.recently_down(arrived)
        {
            return Err(Status::unavailable(format!(
                "peer {}: link down: {why}",
                self.addr()
            )));
        }
        let tx = match self.dial().await {
            Ok(tx) => tx,
            Err(e) => {
                mark_down(&self.inner.down, e.message());
                return Err(e);
            }
        };
        *self.inner.down.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *conn = Some((tx.clone(), generation));
        tx.ready().await.map_err(|e| unavailable(self.addr(), &e))
    }

    /// Why a call that arrived at `arrived` should fail without dialling: the link went
    /// down while it waited behind another call's dial (that dial's outcome is its own),
    /// or less than `retry_after` ago.
    fn recently_down(&self, arrived: Instant) -> Option<String> {
        let down = self.inner.down.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, why) = down.as_ref()?;
        (*at >= arrived || at.elapsed() < self.inner.timing.retry_after).then(|| why.clone())
    }

    async fn dial(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
        let inner = &self.inner;
        let (addr, port) = (inner.authority.as_str(), inner.port);
        let ips = inner
            .resolver
            .resolve(inner.authority.host())
            .await
            .map_err(|e| unavailable(addr, &e))?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no addresses");
        let mut stream = None;
        for ip in ips {
            match tokio::time::timeout(inner.timing.connect_timeout, TcpStream::connect((ip, port))).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connecting to {ip}:{port} timed out"),
                    )
                }
            }
        }
        let stream = stream.ok_or_else(|| unavailable(addr, &last))?;
        // Small frames must not wait for the peer's delayed ACK (ARCHITECTURE.md).
        stream.set_nodelay(true).map_err(|e| unavailable(addr, &e))?;
        let Some(tls) = inner.security.peer() else {
            return self.handshake(stream).await;
        };
        let host = inner
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
            Status::invalid_argument(format!(
                "peer {addr}: `{host}` cannot be checked against a certificate: {e}"
            ))
        })?;
        let connect = tokio_rustls::TlsConnector::from(tls.client).connect(name, stream);
        let stream = tokio::time::timeout(inner.timing.connect_timeout, connect)
            .await
            .map_err(|_| Status::unavailable(format!("TLS handshake with {addr} timed out")))?
            .map_err(|e| unavailable(addr, &format_args!("TLS handshake failed: {e}")))?;
        self.handshake(stream).await
    }

    /// Starts HTTP/2 on a connected stream (plain or TLS) and the tasks that drive it.
    async fn handshake<T>(&self, stream: T) -> Result<h2::client::SendRequest<Bytes>, Status>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let addr = self.addr();
        let handshake = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(stream);
        let (tx, mut connection) = tokio::time::timeout(self.inner.timing.connect_timeout, handshake)
            .await
            .map_err(|_| Status::unavailable(format!("HTTP/2 handshake with {addr} timed out")))?
            .map_err(|e| unavailable(addr, &e))?;
        let ping = connection.ping_pong();
        let peer = addr.to_owned();
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer, error = %e, "peer connection ended");
            }
        });
        if let Some(ping) = ping {
            let down = self.inner.down.clone();
            tokio::spawn(keepalive(ping, driver, addr.to_owned(), self.inner.timing, down));
        }
        Ok(tx)
    }
}

/// Pings the peer; a ping unanswered in time ends the connection (`driver`), failing the
/// calls on it, and marks the link down, so calls fail fast instead of queueing on a
/// connection that a partition silenced.
async fn keepalive(
    mut ping: h2::PingPong,
    driver: tokio::task::JoinHandle<()>,
    addr: String,
    timing: LinkTiming,
    down: Arc<Mutex<Option<(Instant, String)>>>,
) {
    loop {
        tokio::time::sleep(timing.keepalive_interval).await;
        if driver.is_finished() {
            return;
        }
        match tokio::time::timeout(timing.keepalive_timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(peer = %addr, "peer did not answer a ping; closing the connection");
                mark_down(
                    &down,
                    &format!("no answer to a ping within {:?}", timing.keepalive_timeout),
                );
                driver.abort();
                return;
            }
        }
    }
}

/// Records that the link went down now, for `why`.
fn mark_down(down: &Mutex<Option<(Instant, String)>>, why: &str) {
    *down.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), why.to_owned()));
}

/// Marks a failure that happened before the request was sent, so the caller knows a write
/// was not applied and may retry it anywhere.
fn never_sent(status: Status) -> Status {
    crate::pb::not_applied(status.message().to_owned())
}

fn unavailable(addr: &str, e: &dyn std::fmt::Display) -> Status {
    Status::unavailable(format!("peer {addr}: {e}"))
}

impl tower::Service<http::Request<tonic::body::Body>> for PeerChannel {
    type Response = http::Response<PeerBody>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        // Readiness (a live connection with a free stream) is awaited inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move { channel.send(req).await })
    }
}

impl PeerChannel {
    async fn send(&self, req: http::Request<tonic::body::Body>) -> Result<http::Response<PeerBody>, Status> {
        let (mut parts, mut body) = req.into_parts();
        let path = parts.uri.path_and_query().cloned();
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        uri.authority = Some(self.inner.authority.clone());
        uri.path_and_query = path;
        parts.uri = http::Uri::from_parts(uri).map_err(|e| Status::internal(format!("request URI: {e}")))?;

        // Gather what the body has ready (a unary message is ready at once), so HEADERS
        // and DATA go out together.
        let mut head = BytesMut::new();
        let mut finished = false;
        while head.len() < INLINE_BODY_BYTES {
            match futures::FutureExt::now_or_never(body.frame()) {
                Some(Some(frame)) => {
                    if let Ok(data) = frame?.into_data() {
                        head.extend_from_slice(&data);
                    }
                }
                Some(None) => {
                    finished = true;
                    break;
                }
                None => break,
            }
        }

        // Nothing has left this node until the request is handed to a live connection: a
        // failure to dial (refused, unreachable, timed out) guarantees the peer never saw it.
        let mut tx = self.sender().await.map_err(never_sent)?;
        let (response, mut stream) = tx
            .send_request(http::Request::from_parts(parts, ()), false)
            .map_err(|e| unavailable(self.addr(), &e))?;
        stream
            .send_data(head.freeze(), finished)
            .map_err(|e| unavailable(self.addr(), &e))?;
        if !finished {
            tokio::spawn(pipe(body, stream));
        }
        let response = response.await.map_err(|e| h2_status(self.addr(), e))?;
        Ok(response.map(|recv| PeerBody {
            recv,
            data_done: false,
        }))
    }
}

/// Sends the rest of a long request body, waiting for flow-control capacity between frames.
async fn pipe(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            stream.send_reset(h2::Reason::CANCEL);
            return;
        };
        let Ok(mut data) = frame.into_data() else { continue };
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            let granted = match futures::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                _ => return,
            };
            let chunk = data.split_to(granted.min(data.len()));
            if stream.send_data(chunk, false).is_err() {
                return;
            }
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

/// The peer's cancel stays a cancel; anything else (a refused stream, a broken connection)
/// is `UNAVAILABLE`, which the callers treat as "back off and retry".
fn h2_status(addr: &str, e: h2::Error) -> Status {
    if e.is_reset() && e.reason() == Some(h2::Reason::CANCEL) {
        return Status::cancelled(format!("peer {addr} cancelled the call"));
    }
    unavailable(addr, &e)
}

/// A response body read from an h2 stream, releasing flow-control capacity as it goes.
pub struct PeerBody {
    recv: h2::RecvStream,
    data_done: bool,
}

impl Body for PeerBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tower::Service;

    /// A real HTTP/2 server on loopback: answers each request with the number of body bytes
    /// it read, as DATA, then `grpc-status: 0` trailers. Reading releases flow-control
    /// capacity, as a real server does, so bodies larger than the window get through.
    async fn counting_server(listener: TcpListener) {
        // Connections live in this task's set: aborting the server closes them too.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((sock, _)) = listener.accept().await {
            connections.spawn(async move {
                let mut streams = tokio::task::JoinSet::new();
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    streams.spawn(async move {
                        let mut body = req.into_body();
                        let mut n = 0;
                        while let Some(Ok(d)) = body.data().await {
                            n += d.len();
                            let _ = body.flow_control().release_capacity(d.len());
                        }
                        let head = http::Response::builder().status(200).body(()).expect("response");
                        let mut send = respond.send_response(head, false).expect("send response");
                        send.send_data(Bytes::from(n.to_string()), false)
                            .expect("send data");
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        send.send_trailers(trailers).expect("send trailers");
                    });
                }
            });
        }
    }

    fn timing() -> LinkTiming {
        LinkTiming {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_millis(50),
            keepalive_timeout: Duration::from_millis(200),
            retry_after: Duration::from_millis(100),
        }
    }

    fn channel(addr: &str) -> PeerChannel {
        let resolver = HostResolver::new(None).expect("resolver");
        PeerChannel::new(addr, resolver, timing(), Security::none()).expect("channel")
    }

    /// Sends `chunks` as one request body and returns what the server counted, plus the trailers.
    async fn send(ch: &mut PeerChannel, chunks: Vec<Bytes>) -> Result<(String, http::HeaderMap), Status> {
        let frames = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, Status>(Frame::data(c))));
        let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
        let req = http::Request::builder()
            .method("POST")
            .uri("/test.Counter/Count")
            .body(body)
            .expect("request");
        let resp = ch.call(req).await?;
        let collected = resp.into_body().collect().await.expect("response body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        Ok((
            String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            trailers,
        ))
    }

    #[tokio::test]
    async fn small_and_large_bodies_arrive_whole_with_their_trailers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(counting_server(listener));
        let mut ch = channel(&addr);

        let (count, trailers) = send(&mut ch, vec![Bytes::from_static(b"hello")])
            .await
            .expect("small");
        assert_eq!(count, "5");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));

        // 6 MiB in 1 MiB pieces: past the inline limit and both flow-control windows, so
        // the rest goes through the pipe, waiting for window updates.
        let chunks: Vec<Bytes> = (0..6u8).map(|i| Bytes::from(vec![i; 1 << 20])).collect();
        let (count, _) = send(&mut ch, chunks).await.expect("large");
        assert_eq!(count, (6 << 20).to_string());
    }

    #[tokio::test]
    async fn a_restarted_peer_is_dialled_again_and_a_dead_one_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("addr");
        let addr = local.to_string();
        let server = tokio::spawn(counting_server(listener));
        let mut ch = channel(&addr);
        send(&mut ch, vec![Bytes::from_static(b"one")])
            .await
            .expect("first call");

        // The server goes away (its listener and connections with it)...
        server.abort();
        let _ = server.await;
        let err = loop {
            // ...the live connection notices at the next call at the latest.
            match send(&mut ch, vec![Bytes::from_static(b"x")]).await {
                Err(e) => break e,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(err.message().contains(&addr), "the error names the peer: {err}");
        // With the connection gone, the next call must dial, and the refused dial proves
        // the request never left: it is marked not-applied (a write may be retried).
        let refused = send(&mut ch, vec![Bytes::from_static(b"y")])
            .await
            .expect_err("nothing listens any more");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
        assert!(
            refused.metadata().get(crate::pb::NOT_APPLIED_HEADER).is_some(),
            "a refused dial is marked not-applied: {refused:?}"
        );

        // The link is down now: the next call fails at once, without dialling, and is
        // marked not-applied too.
        assert!(
            ch.down().is_some_and(|why| why.contains("refused")),
            "{:?}",
            ch.down()
        );
        let fast = send(&mut ch, vec![Bytes::from_static(b"z")])
            .await
            .expect_err("the link is down");
        assert!(fast.message().contains("link down"), "{fast}");
        assert!(
            fast.metadata().get(crate::pb::NOT_APPLIED_HEADER).is_some(),
            "{fast:?}"
        );

        // ...and comes back on the same port: after `retry_after` a call dials again by itself.
        let listener = TcpListener::bind(local).await.expect("rebind");
        tokio::spawn(counting_server(listener));
        tokio::time::sleep(timing().retry_after).await;
        let (count, _) = send(&mut ch, vec![Bytes::from_static(b"four")])
            .await
            .expect("after restart");
        assert_eq!(count, "4");
        assert_eq!(ch.down(), None, "a successful dial clears the down mark");
    }

    /// A peer that accepts and then goes silent (a partition drops its packets): the
    /// unanswered ping closes the connection, fails the call waiting on it, and marks the
    /// link down — within the keepalive timeout, not TCP's retransmission timeouts.
    #[tokio::test]
    async fn a_silent_peer_is_detected_by_its_unanswered_ping() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        // Completes the HTTP/2 handshake, then stops reading: no pongs, no responses.
        let silent = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.expect("accept");
            let mut conn = h2::server::handshake(sock).await.expect("handshake");
            let _first = conn.accept().await;
            std::future::pending::<()>().await;
        });
        let mut ch = channel(&addr);
        // Without the ping nothing would end this call: the connection looks open to TCP.
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            send(&mut ch, vec![Bytes::from_static(b"lost")]),
        )
        .await
        .expect("the unanswered ping ended the call")
        .expect_err("the peer never answers");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(
            err.metadata().get(crate::pb::NOT_APPLIED_HEADER).is_none(),
            "the request left: its outcome is unknown, not 'not applied': {err:?}"
        );
        assert!(
            ch.down().is_some_and(|why| why.contains("ping")),
            "{:?}",
            ch.down()
        );
        silent.abort();
    }

    #[test]
    fn an_address_without_a_port_is_refused() {
        let resolver = HostResolver::new(None).expect("resolver");
        let err = PeerChannel::new("db-0.db", resolver, timing(), Security::none())
            .err()
            .expect("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("db-0.db"), "{err}");
    }
}
