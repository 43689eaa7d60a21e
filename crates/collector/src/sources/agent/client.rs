//! HTTP to the agent: timeouts, capped bodies (gzip decoded), HTTP Basic or DC/OS
//! service-account tokens (refreshed once on a 401), and errors sorted by what to do next.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use parking_lot::Mutex;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use super::iam::{token_expiry, IamConfig};
use crate::config::{AgentAuth, AgentConfig};

/// Largest answer read (decoded); an agent with thousands of containers stays well below.
pub const MAX_BODY: usize = 64 << 20;
/// A token this close to its expiry is renewed before use.
const TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Why a request failed, by the `reason` tag of `corral.agent.poll_errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// 401, or no token could be had.
    Unauthorized(String),
    /// 403.
    Forbidden(String),
    /// 503 (recovering agent) or no connection.
    Unavailable(String),
    Timeout(String),
    /// 404 (the caller may try an older path).
    NotFound(String),
    /// Any other status or transport failure.
    Http(String),
    /// A body that is too large, not decodable, or not the expected JSON.
    Decode(String),
}

impl FetchError {
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Unauthorized(_) => "unauthorized",
            FetchError::Forbidden(_) => "forbidden",
            FetchError::Unavailable(_) => "unavailable",
            FetchError::Timeout(_) => "timeout",
            FetchError::NotFound(_) | FetchError::Http(_) => "http",
            FetchError::Decode(_) => "decode",
        }
    }

    /// Worth retrying before the next regular poll.
    pub fn transient(&self) -> bool {
        matches!(self, FetchError::Unavailable(_) | FetchError::Timeout(_))
    }

    pub fn message(&self) -> &str {
        match self {
            FetchError::Unauthorized(m)
            | FetchError::Forbidden(m)
            | FetchError::Unavailable(m)
            | FetchError::Timeout(m)
            | FetchError::NotFound(m)
            | FetchError::Http(m)
            | FetchError::Decode(m) => m,
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    Iam {
        path: PathBuf,
        token: Mutex<Option<Token>>,
    },
}

#[derive(Clone)]
struct Token {
    value: String,
    expires: Option<SystemTime>,
}

pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl AgentClient {
    /// Errors name the configuration key at fault.
    pub fn new(cfg: &AgentConfig, base: &str) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .no_proxy()
            .http1_only()
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(2);
        if let Some(path) = &cfg.ca_certificate {
            let pem = std::fs::read(path)
                .with_context(|| format!("agent.ca_certificate: cannot read {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("agent.ca_certificate: {} is not PEM", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!(
                    "agent.ca_certificate: {} holds no certificate",
                    path.display()
                );
            }
            // A configured CA is the only one trusted for the agent.
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .context("agent: cannot set up the HTTP client")?;
        let auth = match &cfg.auth {
            AgentAuth::None => Auth::None,
            AgentAuth::Basic { username, password } => Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            AgentAuth::IamConfig(path) => Auth::Iam {
                path: path.clone(),
                token: Mutex::new(None),
            },
        };
        Ok(AgentClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// Which kind of credentials are configured, for messages.
    pub fn auth_kind(&self) -> &'static str {
        match self.auth {
            Auth::None => "none",
            Auth::Basic { .. } => "agent.basic",
            Auth::Iam { .. } => "agent.iam_config",
        }
    }

    /// GETs `path` (such as `/state`) and returns the decoded body.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, FetchError> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.send(&url).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Auth::Iam { token, .. } = &self.auth {
                // The token may have expired or been revoked: log in again, once.
                *token.lock() = None;
                tracing::debug!(path, "agent refused the token; logging in again");
                resp = self.send(&url).await?;
            }
        }
        let status = resp.status();
        if status.is_success() {
            return read_body(resp, MAX_BODY).await;
        }
        Err(self.status_error(path, resp).await)
    }

    async fn send(&self, url: &str) -> Result<Response, FetchError> {
        let mut req = self.http.get(url);
        match &self.auth {
            Auth::None => {}
            Auth::Basic { username, password } => {
                req = req.basic_auth(username, Some(password));
            }
            Auth::Iam { .. } => {
                let token = self.token().await?;
                let value =
                    HeaderValue::from_str(&format!("token={}", token.value)).map_err(|_| {
                        FetchError::Unauthorized("IAM returned an unusable token".into())
                    })?;
                req = req.header(AUTHORIZATION, value);
            }
        }
        req.send().await.map_err(|e| transport_error(url, &e))
    }

    /// The current service-account token, after logging in when there is none or it is about
    /// to expire.
    async fn token(&self) -> Result<Token, FetchError> {
        let Auth::Iam { path, token } = &self.auth else {
            return Err(FetchError::Unauthorized("no IAM configuration".into()));
        };
        if let Some(t) = token.lock().clone() {
            let fresh = t
                .expires
                .is_none_or(|e| e > SystemTime::now() + TOKEN_RENEW_BEFORE);
            if fresh {
                return Ok(t);
            }
        }
        let cfg = IamConfig::load(path).map_err(FetchError::Unauthorized)?;
        let jwt = cfg
            .login_jwt(SystemTime::now())
            .map_err(|e| FetchError::Unauthorized(format!("agent.iam_config: {e}")))?;
        let body = serde_json::to_vec(&serde_json::json!({"uid": cfg.uid, "token": jwt}))
            .map_err(|e| FetchError::Unauthorized(e.to_string()))?;
        let what = format!("IAM login at {}", cfg.login_endpoint);
        let resp = self
            .http
            .post(&cfg.login_endpoint)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&cfg.login_endpoint, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let detail = snippet(resp).await;
            let msg = format!("{what} failed: {status}{detail}");
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                    FetchError::Unauthorized(msg)
                }
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::BAD_GATEWAY
                | StatusCode::GATEWAY_TIMEOUT => FetchError::Unavailable(msg),
                _ => FetchError::Http(msg),
            });
        }
        let body = read_body(resp, 1 << 20).await?;
        #[derive(serde::Deserialize)]
        struct LoginAnswer {
            token: String,
        }
        let answer: LoginAnswer = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Decode(format!("{what}: unexpected answer: {e}")))?;
        let t = Token {
            expires: token_expiry(&answer.token),
            value: answer.token,
        };
        tracing::info!(uid = %cfg.uid, "logged in to DC/OS IAM for the agent");
        *token.lock() = Some(t.clone());
        Ok(t)
    }

    async fn status_error(&self, path: &str, resp: Response) -> FetchError {
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        let detail = snippet(resp).await;
        match status {
            StatusCode::UNAUTHORIZED => FetchError::Unauthorized(format!(
                "{path}: the agent refused the credentials (401 Unauthorized{challenge}); \
                 check {}",
                match self.auth {
                    Auth::None => "agent.basic or agent.iam_config (none is set)",
                    Auth::Basic { .. } => "agent.basic",
                    Auth::Iam { .. } => "agent.iam_config",
                }
            )),
            StatusCode::FORBIDDEN => FetchError::Forbidden(format!(
                "{path}: the agent denied access (403 Forbidden){detail}; the principal needs \
                 read access to the agent's endpoints"
            )),
            StatusCode::NOT_FOUND => FetchError::NotFound(format!("{path}: 404 Not Found")),
            StatusCode::SERVICE_UNAVAILABLE => {
                FetchError::Unavailable(format!("{path}: 503 Service Unavailable{detail}"))
            }
            _ => FetchError::Http(format!("{path}: {status}{detail}")),
        }
    }
}

/// Reads a body of at most `max` bytes (after gzip decoding).
async fn read_body(mut resp: Response, max: usize) -> Result<Vec<u8>, FetchError> {
    let url = resp.url().path().to_string();
    let too_large = || {
        FetchError::Decode(format!(
            "{url}: answer larger than {} MiB; not read",
            max >> 20
        ))
    };
    let mut body = Vec::new();
    if let Some(len) = resp.content_length() {
        if len > max as u64 {
            return Err(too_large());
        }
        body.reserve(len as usize);
    }
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(&url, &e))? {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an error body, for messages: `": <text>"`, or empty.
async fn snippet(resp: Response) -> String {
    let body = read_body(resp, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// An I/O error that is, or wraps, an `InvalidData` one (`io::Error::source` skips the
/// wrapped error itself, so the wrapping is followed with `get_ref`).
fn invalid_data(e: &std::io::Error) -> bool {
    let mut e = e;
    for _ in 0..8 {
        if e.kind() == std::io::ErrorKind::InvalidData {
            return true;
        }
        match e.get_ref().and_then(|i| i.downcast_ref::<std::io::Error>()) {
            Some(inner) => e = inner,
            None => return false,
        }
    }
    false
}

fn transport_error(url: &str, e: &reqwest::Error) -> FetchError {
    // The source chain says more than the top error ("error sending request").
    let mut msg = format!("{url}: {e}");
    let mut tls = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        // rustls reports handshake and certificate failures as InvalidData I/O errors.
        tls |= s.downcast_ref::<std::io::Error>().is_some_and(invalid_data);
        source = s.source();
    }
    if tls {
        msg.push_str(" (TLS: is the agent's CA in agent.ca_certificate?)");
        FetchError::Http(msg)
    } else if e.is_timeout() {
        FetchError::Timeout(msg)
    } else if e.is_connect() {
        FetchError::Unavailable(msg)
    } else if e.is_decode() || e.is_body() {
        FetchError::Decode(msg)
    } else {
        FetchError::Http(msg)
    }
}
