//! `openraft-memory probe live|ready`: a health probe for images without a shell or curl
//! (compose healthchecks, `exec` probes). Exit code 0 when the node answers 200.
//!
//! The request is written by hand over a TCP socket: it is one fixed `GET` to a local
//! port, and an HTTP client crate in the product would exist only for this. With `tls` it
//! goes over TLS without checking the server's certificate: the probe talks to its own
//! container's port, sends no credential and trusts nothing it reads but a status code.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection, or no complete answer, within the timeout.
    #[error("cannot reach {addr}: {message}")]
    Unreachable {
        /// The probed address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// The node answered with a non-200 status.
    #[error("{path} answered {status}: {body}")]
    NotHealthy {
        /// The probed path.
        path: String,
        /// The HTTP status line's code.
        status: u16,
        /// The response body (the reason).
        body: String,
    },
}

/// GETs `path` from `addr` (host:port), over TLS if `tls`, and succeeds on 200.
pub async fn probe(addr: &str, path: &str, timeout: Duration, tls: bool) -> Result<String, ProbeError> {
    let unreachable = |message: String| ProbeError::Unreachable {
        addr: addr.to_owned(),
        message,
    };
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        if tls {
            let config = crate::security::tls::unverified_client()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            exchange_on(stream, &request).await
        } else {
            exchange_on(stream, &request).await
        }
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unreachable("not an HTTP response".into()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    if status == 200 {
        Ok(body)
    } else {
        Err(ProbeError::NotHealthy {
            path: path.to_owned(),
            status,
            body,
        })
    }
}

async fn exchange_on<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    // A TLS server may close without close_notify after `Connection: close`: what was read
    // until then is the answer.
    match stream.read_to_end(&mut response).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        other => {
            other?;
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_status_and_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            for answer in [
                "200 OK\r\n\r\n{\"status\":\"ready\"}",
                "503 Service Unavailable\r\n\r\n{\"reason\":\"no leader\"}",
            ] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(format!("HTTP/1.1 {answer}").as_bytes()).await;
            }
        });
        let ok = probe(&addr, "/readyz", Duration::from_secs(2), false)
            .await
            .expect("healthy");
        assert!(ok.contains("ready"));
        let err = probe(&addr, "/readyz", Duration::from_secs(2), false)
            .await
            .expect_err("unhealthy");
        assert!(
            err.to_string().contains("503") && err.to_string().contains("no leader"),
            "{err}"
        );
        let err = probe("127.0.0.1:1", "/livez", Duration::from_secs(2), false)
            .await
            .expect_err("closed port");
        assert!(matches!(err, ProbeError::Unreachable { .. }));
    }
}
