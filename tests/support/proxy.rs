//! A recording, fault-injecting HTTP/1.1 reverse proxy for tests, placed between the code under
//! test and moto. It runs on its own tokio runtime (background worker thread), so it works from
//! both `#[test]` and `#[tokio::test]`.
//!
//! Every request is classified into a [`Call`] (service from the SigV4 credential scope,
//! operation from `X-Amz-Target`, the Query `Action` form field, or `METHOD /path?query-keys` for
//! REST protocols) and recorded. [`Rule`]s are consulted per request, in insertion order:
//! delay rules wait before forwarding, latency rules set a floor on the round trip, the first
//! matching fail rule answers an AWS-style error instead of forwarding.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// SigV4 credential-scope service name (`dynamodb`, `iam`, `s3`, `lambda`, `apigateway`, ...).
    pub service: String,
    /// `CreateTable` (JSON / Query protocols) or `PUT /bucket?versioning` (REST protocols).
    pub operation: String,
    pub mutating: bool,
    /// Status returned to the client (the injected status for faulted calls).
    pub status: u16,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}{} -> {}",
            self.service,
            self.operation,
            if self.mutating { " (mutating)" } else { "" },
            self.status
        )
    }
}

/// Wire protocol family of a request, used to shape injected errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `X-Amz-Target` JSON RPC (DynamoDB, CloudWatch Logs, ...).
    Json,
    /// Form-encoded `Action=...` (IAM, STS, EC2, SNS, CloudWatch).
    Query,
    /// Everything else (S3, Lambda, API Gateway, ...).
    Rest,
}

/// What a rule's matcher sees.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub service: String,
    pub operation: String,
    pub mutating: bool,
    pub protocol: Protocol,
    pub method: String,
    /// Path and query exactly as received.
    pub path_and_query: String,
}

type MatchFn = Arc<dyn Fn(&RequestInfo) -> bool + Send + Sync>;

/// Selects the requests a [`Rule`] applies to.
#[derive(Clone)]
pub struct Matcher(MatchFn);

impl Matcher {
    /// Every request.
    pub fn any() -> Matcher {
        Matcher(Arc::new(|_| true))
    }
    /// Exact operation name (`CreateTable`, or a full REST op like `PUT /bucket`).
    pub fn op(op: &str) -> Matcher {
        let op = op.to_string();
        Matcher(Arc::new(move |r| r.operation == op))
    }
    /// Exact service and operation.
    pub fn service_op(service: &str, op: &str) -> Matcher {
        let (service, op) = (service.to_string(), op.to_string());
        Matcher(Arc::new(move |r| r.service == service && r.operation == op))
    }
    /// Every request of a service.
    pub fn service(service: &str) -> Matcher {
        let service = service.to_string();
        Matcher(Arc::new(move |r| r.service == service))
    }
    /// REST operations starting with `prefix`, e.g. `"PUT /my-bucket"`.
    pub fn op_prefix(prefix: &str) -> Matcher {
        let prefix = prefix.to_string();
        Matcher(Arc::new(move |r| r.operation.starts_with(&prefix)))
    }
    /// Mutating requests only.
    pub fn mutating() -> Matcher {
        Matcher(Arc::new(|r| r.mutating))
    }
    /// Arbitrary predicate.
    pub fn custom(f: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static) -> Matcher {
        Matcher(Arc::new(f))
    }
    fn matches(&self, r: &RequestInfo) -> bool {
        (self.0)(r)
    }
}

/// `"CreateTable"` matches the operation exactly; `"iam:CreateRole"` matches service and
/// operation; a string containing a space (`"PUT /bucket"`) is a REST operation prefix;
/// `"*"` matches everything.
impl From<&str> for Matcher {
    fn from(s: &str) -> Matcher {
        if s == "*" {
            Matcher::any()
        } else if s.contains(' ') {
            Matcher::op_prefix(s)
        } else if let Some((svc, op)) = s.split_once(':') {
            Matcher::service_op(svc, op)
        } else {
            Matcher::op(s)
        }
    }
}

impl From<String> for Matcher {
    fn from(s: String) -> Matcher {
        Matcher::from(s.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Answer an AWS-style error instead of forwarding.
    Fail {
        status: u16,
        code: String,
        message: String,
    },
    /// Wait before forwarding (or before a fail rule answers).
    Delay(Duration),
    /// Forward at once, but answer no earlier than this long after the
    /// request arrived: a round trip of this length, of which the
    /// upstream's own service time is a part (not added to it).
    Latency(Duration),
    /// Close the connection without answering (a connection reset as the
    /// client sees it).
    Reset,
}

/// Marks a response the server must not send: the connection is dropped.
#[derive(Clone, Copy)]
struct ResetConnection;

/// A fault-injection rule: applies to matching requests, at most `remaining` times
/// (`None` = unlimited).
#[derive(Clone)]
pub struct Rule {
    pub matcher: Matcher,
    pub action: Action,
    pub remaining: Option<usize>,
    /// Applies to each matching request only with this probability, drawn
    /// from a seeded generator so a failing run can be replayed.
    chance: Option<(f64, Arc<Mutex<u64>>)>,
}

impl Rule {
    /// Answer the first `times` matching requests with an AWS error (`status`, `code`, `message`)
    /// shaped for the request's protocol, instead of forwarding them.
    pub fn fail(
        matcher: impl Into<Matcher>,
        times: usize,
        status: u16,
        aws_error_code: &str,
        message: &str,
    ) -> Rule {
        Rule {
            matcher: matcher.into(),
            action: Action::Fail {
                status,
                code: aws_error_code.to_string(),
                message: message.to_string(),
            },
            remaining: Some(times),
            chance: None,
        }
    }

    /// Drop the connection of matching requests instead of answering
    /// (limit it with [`Rule::times`] or [`Rule::with_probability`]).
    pub fn reset(matcher: impl Into<Matcher>) -> Rule {
        Rule {
            matcher: matcher.into(),
            action: Action::Reset,
            remaining: None,
            chance: None,
        }
    }

    /// Delay every matching request by `delay` (limit it with [`Rule::times`]).
    pub fn delay(matcher: impl Into<Matcher>, delay: Duration) -> Rule {
        Rule {
            matcher: matcher.into(),
            action: Action::Delay(delay),
            remaining: None,
            chance: None,
        }
    }

    /// Give every matching request a round trip of at least `latency`,
    /// counted from its arrival; the upstream's own time is part of it.
    /// Several matching latency rules add up.
    pub fn latency(matcher: impl Into<Matcher>, latency: Duration) -> Rule {
        Rule {
            matcher: matcher.into(),
            action: Action::Latency(latency),
            remaining: None,
            chance: None,
        }
    }

    /// Apply this rule to each matching request with probability `p`
    /// (deterministic for a given `seed`), without a count limit.
    pub fn with_probability(mut self, p: f64, seed: u64) -> Rule {
        self.remaining = None;
        self.chance = Some((p, Arc::new(Mutex::new(seed.max(1)))));
        self
    }

    fn draw(&self) -> bool {
        let Some((p, rng)) = &self.chance else {
            return true;
        };
        // xorshift64*: enough randomness for fault injection, no dependency.
        let mut x = rng.lock().unwrap();
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 11) as f64 / (1u64 << 53) as f64) < *p
    }

    /// Apply this rule to at most `n` more matching requests.
    pub fn times(mut self, n: usize) -> Rule {
        self.remaining = Some(n);
        self
    }
}

#[derive(Clone)]
struct Recorded {
    call: Call,
    injected: bool,
    path_and_query: String,
    start: Instant,
    end: Instant,
}

/// One request with when it arrived and when it was answered (for timelines).
#[derive(Debug, Clone)]
pub struct Timed {
    pub call: Call,
    pub path_and_query: String,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Recorded>>,
    rules: Mutex<Vec<Rule>>,
    /// Service name -> upstream authority, for services not served by the default upstream.
    routes: Mutex<std::collections::BTreeMap<String, String>>,
    /// Requests received and not yet answered (or dropped).
    in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:<free port>` forwarding to `upstream`
    /// (e.g. `http://127.0.0.1:5000`). Usable from sync and async tests.
    pub fn start(upstream: &str) -> Proxy {
        let upstream: Uri = upstream
            .trim_end_matches('/')
            .parse()
            .expect("upstream must be a URI like http://127.0.0.1:5000");
        assert_eq!(
            upstream.scheme_str(),
            Some("http"),
            "proxy upstream must be plain http"
        );
        let authority = upstream
            .authority()
            .expect("upstream URI has no host:port")
            .to_string();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy local addr");

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("build proxy runtime");
        let state = Arc::new(State::default());

        let st = state.clone();
        rt.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("tokio proxy listener");
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let upstream = Arc::new(authority);
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let (st, client, upstream) = (st.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, client, upstream) = (st.clone(), client.clone(), upstream.clone());
                        async move {
                            let resp = handle(req, &st, &client, &upstream).await;
                            if resp.extensions().get::<ResetConnection>().is_some() {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::ConnectionReset,
                                    "injected connection reset",
                                ));
                            }
                            Ok(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });

        Proxy {
            addr,
            state,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order of completion.
    pub fn calls(&self) -> Vec<Call> {
        let calls = self.state.calls.lock().unwrap();
        calls.iter().map(|r| r.call.clone()).collect()
    }

    /// Every request so far with its arrival and answer times.
    pub fn timeline(&self) -> Vec<Timed> {
        let calls = self.state.calls.lock().unwrap();
        calls
            .iter()
            .map(|r| Timed {
                call: r.call.clone(),
                path_and_query: r.path_and_query.clone(),
                start: r.start,
                end: r.end,
            })
            .collect()
    }

    /// Requests classified as mutating (including ones answered by a fail rule).
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.mutating).collect()
    }

    /// The operations of the mutating requests, in order.
    pub fn mutating_operations(&self) -> Vec<String> {
        self.mutating_calls()
            .into_iter()
            .map(|c| c.operation)
            .collect()
    }

    /// Requests answered by a fail rule instead of being forwarded.
    pub fn injected_calls(&self) -> Vec<Call> {
        let calls = self.state.calls.lock().unwrap();
        calls
            .iter()
            .filter(|r| r.injected)
            .map(|r| r.call.clone())
            .collect()
    }

    /// Forget recorded calls (rules stay).
    pub fn clear(&self) {
        self.state.calls.lock().unwrap().clear();
    }

    /// Append a rule; rules are consulted in insertion order.
    pub fn add_rule(&self, rule: Rule) {
        self.state.rules.lock().unwrap().push(rule);
    }

    /// Forwards `service`'s calls (SigV4 service name) to `upstream` instead
    /// of the default upstream.
    pub fn route(&self, service: &str, upstream: &str) {
        let uri: Uri = upstream
            .trim_end_matches('/')
            .parse()
            .expect("upstream URI");
        let authority = uri.authority().expect("upstream URI has no host:port");
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(service.to_string(), authority.to_string());
    }

    /// Waits until no request is in flight (a killed client's requests
    /// still held by a delay rule have been forwarded and answered).
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self
            .state
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            assert!(
                Instant::now() < deadline,
                "requests still in flight at the proxy after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Remove all rules.
    pub fn clear_rules(&self) {
        self.state.rules.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Safe inside an async context, unlike dropping the runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    st: &State,
    client: &Client<HttpConnector, Full<Bytes>>,
    upstream: &str,
) -> Response<Full<Bytes>> {
    st.in_flight
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _in_flight = InFlight(&st.in_flight);
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("proxy: bad body: {e}")),
    };
    let info = classify(&parts, &body);
    let routed = st.routes.lock().unwrap().get(&info.service).cloned();
    let upstream = routed.as_deref().unwrap_or(upstream);

    // Consult rules: accumulate delays, first matching fail rule wins.
    let mut delay = Duration::ZERO;
    let mut latency = Duration::ZERO;
    let mut fail = None;
    {
        let mut rules = st.rules.lock().unwrap();
        for rule in rules.iter_mut() {
            if rule.remaining == Some(0) || !rule.matcher.matches(&info) {
                continue;
            }
            if matches!(rule.action, Action::Fail { .. } | Action::Reset) && fail.is_some() {
                continue;
            }
            if !rule.draw() {
                continue;
            }
            match &rule.action {
                Action::Delay(d) => delay += *d,
                Action::Latency(d) => latency += *d,
                Action::Fail { .. } | Action::Reset if fail.is_some() => continue,
                Action::Reset => fail = Some((0, String::new(), String::new())),
                Action::Fail {
                    status,
                    code,
                    message,
                } => fail = Some((*status, code.clone(), message.clone())),
            }
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let (resp, injected) = match fail {
        Some((0, _, _)) => {
            let mut r = plain(StatusCode::BAD_GATEWAY, "reset".to_string());
            r.extensions_mut().insert(ResetConnection);
            (r, true)
        }
        Some((status, code, message)) => (error_response(&info, status, &code, &message), true),
        None => {
            let pq = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".to_string());
            parts.uri = format!("http://{upstream}{pq}")
                .parse()
                .expect("upstream uri");
            parts.version = hyper::Version::HTTP_11;
            let h = &mut parts.headers;
            for name in [
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "te",
                "trailer",
                "upgrade",
                "expect",
            ] {
                h.remove(name);
            }
            h.insert(HOST, HeaderValue::from_str(upstream).expect("host header"));
            h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
            let fwd = Request::from_parts(parts, Full::new(body));
            match client.request(fwd).await {
                Ok(resp) => {
                    let (mut rp, rb) = resp.into_parts();
                    let rb = match rb.collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(e) => {
                            return plain(
                                StatusCode::BAD_GATEWAY,
                                format!("proxy: upstream body: {e}"),
                            )
                        }
                    };
                    for name in ["connection", "keep-alive", "transfer-encoding", "trailer"] {
                        rp.headers.remove(name);
                    }
                    if info.method != "HEAD" {
                        rp.headers
                            .insert(CONTENT_LENGTH, HeaderValue::from(rb.len()));
                    }
                    (Response::from_parts(rp, Full::new(rb)), false)
                }
                Err(e) => (
                    plain(StatusCode::BAD_GATEWAY, format!("proxy: upstream: {e}")),
                    false,
                ),
            }
        }
    };

    if let Some(rest) = latency.checked_sub(start.elapsed()) {
        tokio::time::sleep(rest).await;
    }

    st.calls.lock().unwrap().push(Recorded {
        call: Call {
            service: info.service,
            operation: info.operation,
            mutating: info.mutating,
            status: resp.status().as_u16(),
        },
        injected,
        path_and_query: info.path_and_query,
        start,
        end: Instant::now(),
    });
    resp
}

fn plain(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg)));
    *r.status_mut() = status;
    r
}

const READ_PREFIXES: &[&str] = &[
    "Describe", "Get", "List", "Query", "Scan", "BatchGet", "Check", "Lookup", "Search", "Head",
    "Test", "Validate",
];

/// Whether a JSON/Query operation name changes state.
pub fn is_mutating_op(op: &str) -> bool {
    !READ_PREFIXES.iter().any(|p| op.starts_with(p))
}

fn header<'a>(parts: &'a hyper::http::request::Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Service name from a SigV4 credential scope `AKID/DATE/REGION/SERVICE/aws4_request`.
fn scope_service(credential: &str) -> Option<String> {
    let mut it = credential.split('/');
    let svc = it.nth(3)?;
    (!svc.is_empty()).then(|| svc.to_string())
}

fn classify(parts: &hyper::http::request::Parts, body: &Bytes) -> RequestInfo {
    let method = parts.method.as_str().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let query = parts.uri.query().unwrap_or("");

    // Service: from the Authorization header's scope, else a presigned X-Amz-Credential.
    let mut service = header(parts, "authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .map(|c| c.split([',', ' ']).next().unwrap_or(c))
        .and_then(scope_service)
        .or_else(|| {
            form_value(query, "X-Amz-Credential")
                .as_deref()
                .and_then(scope_service)
        });

    let target = header(parts, "x-amz-target");
    let content_type = header(parts, "content-type").unwrap_or("");
    let (protocol, operation, mutating) = if let Some(t) = target {
        let op = t.rsplit('.').next().unwrap_or(t).to_string();
        if service.is_none() {
            service = Some(t.split(['_', '.']).next().unwrap_or(t).to_lowercase());
        }
        let m = is_mutating_op(&op);
        (Protocol::Json, op, m)
    } else if let Some(action) = content_type
        .starts_with("application/x-www-form-urlencoded")
        .then(|| form_value(&String::from_utf8_lossy(body), "Action"))
        .flatten()
        .or_else(|| form_value(query, "Action"))
    {
        let m = is_mutating_op(&action);
        (Protocol::Query, action, m)
    } else {
        // `/bucket/` and `/bucket` are the same resource; keep ops readable.
        let path = parts.uri.path();
        let path = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let mut op = format!("{method} {path}");
        if !query.is_empty() {
            let keys: Vec<String> = query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some(("x-id", v)) => format!("x-id={v}"),
                    Some((k, _)) => k.to_string(),
                    None => kv.to_string(),
                })
                .collect();
            op.push('?');
            op.push_str(&keys.join("&"));
        }
        let m = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
        (Protocol::Rest, op, m)
    };

    RequestInfo {
        service: service.unwrap_or_else(|| "unknown".to_string()),
        operation,
        mutating,
        protocol,
        method,
        path_and_query,
    }
}

/// Value of `key` in an `application/x-www-form-urlencoded` string, percent-decoded.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

const INJECTED_REQUEST_ID: &str = "00000000-0000-0000-0000-000000000000";

/// An AWS error in the shape the request's protocol expects.
fn error_response(
    info: &RequestInfo,
    status: u16,
    code: &str,
    message: &str,
) -> Response<Full<Bytes>> {
    let (content_type, body) = match info.protocol {
        Protocol::Json => (
            "application/x-amz-json-1.0",
            format!(
                r#"{{"__type":"{}","message":"{}"}}"#,
                json_escape(code),
                json_escape(message)
            ),
        ),
        Protocol::Query if info.service == "ec2" => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{INJECTED_REQUEST_ID}</RequestID></Response>",
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::Query => (
            "text/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{INJECTED_REQUEST_ID}</RequestId></ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" },
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::Rest if info.service == "s3" => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{INJECTED_REQUEST_ID}</RequestId></Error>",
                xml_escape(code),
                xml_escape(message)
            ),
        ),
        Protocol::Rest => (
            "application/json",
            format!(
                r#"{{"__type":"{c}","code":"{c}","message":"{m}","Message":"{m}"}}"#,
                c = json_escape(code),
                m = json_escape(message)
            ),
        ),
    };
    // S3 HEAD errors have no body; the SDK then derives the code from the status.
    let body = if info.method == "HEAD" {
        String::new()
    } else {
        body
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "x-amzn-errortype",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("InjectedFault")),
    );
    h.insert(
        "x-amzn-requestid",
        HeaderValue::from_static(INJECTED_REQUEST_ID),
    );
    h.insert(
        "x-amz-request-id",
        HeaderValue::from_static(INJECTED_REQUEST_ID),
    );
    r
}
