//! A stand-in Mesos agent for the tests: real HTTP on 127.0.0.1, answering `/state`,
//! `/containers`, `/monitor/statistics` (and the old `.json` spellings) from the fixtures in
//! `tests/fixtures/mesos/`, with switches for authentication (HTTP Basic, DC/OS IAM tokens),
//! recovery (503), slow answers, gzip, old agents and containers coming and going.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::Value;

pub const STATE: &str = include_str!("../fixtures/mesos/state.json");
pub const CONTAINERS: &str = include_str!("../fixtures/mesos/containers.json");
pub const CONTAINERS_NONFINITE: &str = include_str!("../fixtures/mesos/containers-nonfinite.json");
pub const LEGACY_STATE: &str = include_str!("../fixtures/mesos/legacy/state.json");
pub const LEGACY_STATISTICS: &str =
    include_str!("../fixtures/mesos/legacy/monitor-statistics.json");
pub const IAM_PRIVATE_KEY: &str = include_str!("../fixtures/mesos/iam/service-account.key");
const IAM_PUBLIC_KEY: &str = include_str!("../fixtures/mesos/iam/service-account.pub.pem");

pub const TLS_CA: &str = include_str!("../fixtures/mesos/tls/ca.pem");
const TLS_CERT: &str = include_str!("../fixtures/mesos/tls/agent.pem");
const TLS_KEY: &str = include_str!("../fixtures/mesos/tls/agent.key");

pub const LOGIN_PATH: &str = "/acs/api/v1/auth/login";
/// The service account the stub's IAM accepts.
pub const IAM_UID: &str = "corral-test";

#[derive(Clone, Debug, Default, PartialEq)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    /// `Authorization: token=<token>` with a token from the stub's IAM login endpoint.
    Iam,
}

/// What the stub does; change it while a test runs with [`StubAgent::set`].
#[derive(Clone, Debug, Default)]
pub struct Switches {
    pub auth: Auth,
    /// 503 on `/state`, as an agent that has not finished recovery.
    pub unavailable: bool,
    /// 403 on `/containers` and `/monitor/statistics`.
    pub forbidden: bool,
    /// Wait this long before answering the agent endpoints.
    pub delay: Duration,
    /// Gzip answers of at least 1024 bytes when the request accepts gzip (as libprocess).
    pub gzip: bool,
    /// A Mesos 0.2x agent: only `/state.json` and `/monitor/statistics.json`.
    pub legacy: bool,
    /// Serve `containers-nonfinite.json` (bare NaN/Infinity, Mesos >= 1.10).
    pub nonfinite: bool,
    /// Containers the agent no longer reports (`/containers` and `/state` executors).
    pub hidden: HashSet<String>,
}

/// One request the stub answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub accept_encoding: Option<String>,
    pub status: u16,
    pub gzipped: bool,
}

#[derive(Default)]
struct Inner {
    switches: Switches,
    seen: Vec<Seen>,
    tokens: HashSet<String>,
    logins: u32,
    next_token: u64,
}

type Shared = Arc<Mutex<Inner>>;

pub struct StubAgent {
    pub addr: SocketAddr,
    tls: bool,
    inner: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StubAgent {
    pub fn start(switches: Switches) -> StubAgent {
        Self::start_with(switches, false)
    }

    /// Serves HTTPS with a certificate for 127.0.0.1 signed by [`TLS_CA`].
    pub fn start_tls(switches: Switches) -> StubAgent {
        Self::start_with(switches, true)
    }

    fn start_with(switches: Switches, tls: bool) -> StubAgent {
        let inner: Shared = Arc::new(Mutex::new(Inner {
            switches,
            ..Inner::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stub runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("stub bind");
                addr_tx
                    .send(listener.local_addr().expect("stub addr"))
                    .expect("send addr");
                let app = Router::new().fallback(handle).with_state(state);
                if tls {
                    serve_tls(listener, app, stop_rx).await;
                } else {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                        })
                        .await
                        .expect("stub serve");
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stub started");
        StubAgent {
            addr,
            tls,
            inner,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn login_url(&self) -> String {
        format!("{}{LOGIN_PATH}", self.url())
    }

    pub fn set(&self, f: impl FnOnce(&mut Switches)) {
        f(&mut self.inner.lock().unwrap().switches);
    }

    pub fn hide(&self, container: &str) {
        self.set(|s| {
            s.hidden.insert(container.to_string());
        });
    }

    /// Forgets every issued token: the next agent request with one gets a 401.
    pub fn revoke_tokens(&self) {
        self.inner.lock().unwrap().tokens.clear();
    }

    pub fn logins(&self) -> u32 {
        self.inner.lock().unwrap().logins
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    pub fn requests_to(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
}

impl Drop for StubAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(TLS_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("fixture certificate");
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY.as_bytes()).expect("fixture key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let tcp = tokio::select! {
            a = listener.accept() => match a {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = &mut stop => return,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that rejects the certificate ends the handshake: nothing to serve.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(tls),
                    hyper_util::service::TowerToHyperService::new(app),
                )
                .await;
        });
    }
}

async fn handle(State(shared): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let switches = shared.lock().unwrap().switches.clone();
    let (status, extra, body, gzipped) = if path == LOGIN_PATH && method == Method::POST {
        let (s, b) = login(&shared, &body);
        (s, None, b, false)
    } else {
        if path != "/health" && !switches.delay.is_zero() {
            tokio::time::sleep(switches.delay).await;
        }
        agent(&shared, &switches, &method, &path, &headers)
    };
    shared.lock().unwrap().seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        authorization: header_str(&headers, header::AUTHORIZATION),
        accept_encoding: header_str(&headers, header::ACCEPT_ENCODING),
        status: status.as_u16(),
        gzipped,
    });
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    if gzipped {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    if let Some((name, value)) = extra {
        resp.headers_mut().insert(name, value);
    }
    resp
}

type Extra = Option<(header::HeaderName, header::HeaderValue)>;

fn agent(
    shared: &Shared,
    s: &Switches,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> (StatusCode, Extra, Body, bool) {
    let plain = |status: StatusCode, text: &'static str| (status, None, Body::from(text), false);
    if path == "/health" {
        return plain(StatusCode::OK, "");
    }
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    if let Some(challenge) = authenticate(shared, s, headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Some((
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(challenge),
            )),
            Body::empty(),
            false,
        );
    }
    let text: String = match (s.legacy, path) {
        (false, "/state") => {
            if s.unavailable {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Agent has not finished recovery",
                );
            }
            filter_state(STATE, &s.hidden)
        }
        (false, "/containers") | (false, "/monitor/statistics") if s.forbidden => {
            return plain(StatusCode::FORBIDDEN, "");
        }
        (false, "/containers") if s.nonfinite => CONTAINERS_NONFINITE.to_string(),
        (false, "/containers") => filter_containers(CONTAINERS, &s.hidden),
        (true, "/state.json") => {
            if s.unavailable {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Agent has not finished recovery",
                );
            }
            LEGACY_STATE.to_string()
        }
        (true, "/monitor/statistics.json") => LEGACY_STATISTICS.to_string(),
        _ => return plain(StatusCode::NOT_FOUND, ""),
    };
    let accepts_gzip = header_str(headers, header::ACCEPT_ENCODING)
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    if s.gzip && accepts_gzip && text.len() >= 1024 {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text.as_bytes()).expect("gzip");
        let gz = enc.finish().expect("gzip");
        return (StatusCode::OK, None, Body::from(gz), true);
    }
    (StatusCode::OK, None, Body::from(text), false)
}

/// `Some(challenge)` when the request is not authenticated.
fn authenticate(shared: &Shared, s: &Switches, headers: &HeaderMap) -> Option<&'static str> {
    let given = header_str(headers, header::AUTHORIZATION);
    match &s.auth {
        Auth::None => None,
        Auth::Basic { username, password } => {
            let want = format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            );
            (given.as_deref() != Some(&want)).then_some("Basic realm=\"mesos-agent-readonly\"")
        }
        Auth::Iam => {
            let ok = given
                .as_deref()
                .and_then(|g| g.strip_prefix("token="))
                .is_some_and(|t| shared.lock().unwrap().tokens.contains(t));
            (!ok).then_some("acsjwt")
        }
    }
}

/// The IAM login endpoint: verifies the RS256 signature of the service account's JWT with
/// its public key, and issues a token.
fn login(shared: &Shared, body: &[u8]) -> (StatusCode, Body) {
    let refuse = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            Body::from(format!(
                "{{\"title\":\"Invalid authentication credentials\",\"description\":\"{why}\"}}"
            )),
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, Body::from("not JSON"));
    };
    let (Some(uid), Some(jwt)) = (v["uid"].as_str(), v["token"].as_str()) else {
        return refuse("uid and token required");
    };
    if uid != IAM_UID {
        return refuse("unknown service account");
    }
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return refuse("malformed token");
    }
    let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
    let (Some(header), Some(claims), Some(sig)) =
        (decode(parts[0]), decode(parts[1]), decode(parts[2]))
    else {
        return refuse("malformed token");
    };
    let header: Value = serde_json::from_slice(&header).unwrap_or_default();
    if header["alg"] != "RS256" {
        return refuse("alg must be RS256");
    }
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pem_der(IAM_PUBLIC_KEY),
    );
    let input = format!("{}.{}", parts[0], parts[1]);
    if public.verify(input.as_bytes(), &sig).is_err() {
        return refuse("bad signature");
    }
    let claims: Value = serde_json::from_slice(&claims).unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if claims["uid"] != uid || claims["exp"].as_u64().is_none_or(|e| e <= now) {
        return refuse("bad claims");
    }
    let mut inner = shared.lock().unwrap();
    inner.logins += 1;
    inner.next_token += 1;
    // A token shaped like IAM's (a JWT whose exp the client may read).
    let payload = URL_SAFE_NO_PAD.encode(format!(
        "{{\"uid\":\"{uid}\",\"exp\":{}}}",
        now + 5 * 24 * 3600
    ));
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.stub{}", inner.next_token);
    inner.tokens.insert(token.clone());
    (
        StatusCode::OK,
        Body::from(serde_json::json!({ "token": token }).to_string()),
    )
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("fixture PEM")
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn filter_containers(fixture: &str, hidden: &HashSet<String>) -> String {
    if hidden.is_empty() {
        return fixture.to_string();
    }
    let mut v: Value = serde_json::from_str(fixture).expect("fixture");
    if let Some(list) = v.as_array_mut() {
        list.retain(|c| {
            !c["container_id"]
                .as_str()
                .is_some_and(|id| hidden.contains(id))
        });
    }
    v.to_string()
}

fn filter_state(fixture: &str, hidden: &HashSet<String>) -> String {
    if hidden.is_empty() {
        return fixture.to_string();
    }
    let mut v: Value = serde_json::from_str(fixture).expect("fixture");
    if let Some(frameworks) = v["frameworks"].as_array_mut() {
        for f in frameworks {
            if let Some(executors) = f["executors"].as_array_mut() {
                executors.retain(|e| {
                    !e["container"]
                        .as_str()
                        .is_some_and(|id| hidden.contains(id))
                });
            }
        }
    }
    v.to_string()
}
