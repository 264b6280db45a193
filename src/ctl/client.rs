//! The HTTP side of `ctl`: one REST request tried on each endpoint in turn, and the error a
//! failed one becomes, with the exit code scripts can rely on.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Exit codes of `ctl` (also listed in its `--help`).
pub mod exit {
    /// Anything else: a server error, a bad answer, a file that could not be written.
    pub const FAILED: u8 = 1;
    /// The command line or the input is wrong (clap uses 2 as well; a 400 from the node).
    pub const USAGE: u8 = 2;
    /// The record or member does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// A conflict: the record exists already, `--if-revision` did not match, or a
    /// membership change was refused.
    pub const CONFLICT: u8 = 4;
    /// No endpoint could serve it now (unreachable, no leader, timeout, overloaded): retry.
    pub const UNAVAILABLE: u8 = 5;
    /// The token is missing, unknown or lacks the role.
    pub const DENIED: u8 = 6;
    /// `watch`: the start revision is compacted (list again and watch from its revision).
    pub const COMPACTED: u8 = 7;
}

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The arguments make no sense.
    #[error("{0}")]
    Usage(String),
    /// A node answered with a problem.
    #[error("{status}: {detail}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The problem's `detail` (or the body, if it was not a problem).
        detail: String,
        /// The problem object, for `-o json`.
        problem: Value,
    },
    /// No endpoint answered.
    #[error("no endpoint could be reached: {0}")]
    Unreachable(String),
    /// A local file or an answer that could not be read.
    #[error("{0}")]
    Local(String),
}

impl CtlError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => exit::USAGE,
            CtlError::Unreachable(_) => exit::UNAVAILABLE,
            CtlError::Local(_) => exit::FAILED,
            CtlError::Api { status, problem, .. } => match status.as_u16() {
                400 | 413 | 415 => exit::USAGE,
                404 => exit::NOT_FOUND,
                409 | 412 => exit::CONFLICT,
                401 | 403 => exit::DENIED,
                410 if kind(problem) == Some("compacted") => exit::COMPACTED,
                503 | 504 => exit::UNAVAILABLE,
                _ => exit::FAILED,
            },
        }
    }
}

/// The last segment of a problem's `type`: `no-leader`, `compacted`, ...
pub fn kind(problem: &Value) -> Option<&str> {
    problem["type"].as_str().and_then(|t| t.rsplit('/').next())
}

/// REST client over several endpoints.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of `endpoints` (`http://` or `https://` base URLs; a bare `host:port` means
    /// `http://`), trusting `ca_pem` for HTTPS when given.
    pub fn new(
        endpoints: &[String],
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Client, CtlError> {
        crate::security::tls::install_default_provider();
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().trim_end_matches('/'))
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            return Err(CtlError::Usage(
                "no endpoints: pass --endpoints or set OPENRAFT_MEMORY_ENDPOINTS".into(),
            ));
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
        if let Some(pem) = ca_pem {
            let config = crate::security::tls::client_trusting(pem, None, &[b"http/1.1"])
                .map_err(|e| CtlError::Usage(format!("--cacert: {e}")))?;
            builder = builder.use_preconfigured_tls((*config).clone());
        }
        let http = builder
            .build()
            .map_err(|e| CtlError::Local(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoints,
            token,
            timeout,
        })
    }

    /// The endpoints, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A request to `url` with the token, without a deadline (streams).
    pub fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends `method path` to each endpoint in turn until one answers with anything but a
    /// connection failure or a retryable 503; a success is returned, a problem becomes
    /// [`CtlError::Api`]. `stream`: no overall deadline (a backup or a watch).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
        stream: bool,
    ) -> Result<reqwest::Response, CtlError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let mut req = self.request(method.clone(), &format!("{endpoint}{path}"));
            if !stream {
                req = req.timeout(self.timeout);
            }
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(CtlError::Unreachable(format!("{endpoint}: {}", describe(&e))));
                    continue;
                }
            };
            if resp.status().is_success() {
                return Ok(resp);
            }
            let err = problem(resp).await;
            let retry_elsewhere =
                matches!(&err, CtlError::Api { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE);
            if !retry_elsewhere {
                return Err(err);
            }
            last = Some(err);
        }
        Err(last.unwrap_or_else(|| CtlError::Unreachable("no endpoints".into())))
    }

    /// `send` for a JSON answer.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, CtlError> {
        let resp = self.send(method, path, body, headers, false).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        resp.json()
            .await
            .map_err(|e| CtlError::Local(format!("the answer is not JSON: {e}")))
    }
}

/// A failed answer as an error, its problem+json read if it has one.
pub async fn problem(resp: reqwest::Response) -> CtlError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let detail = problem["detail"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| text.chars().take(300).collect());
    CtlError::Api {
        status,
        detail,
        problem,
    }
}

/// A transport error with its causes, which reqwest keeps in the source chain.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
