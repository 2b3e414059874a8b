//! A built-in Lambda Runtime API: runs an embedded `bootstrap` as a child
//! process with the environment Lambda gives it, and hands it invocations
//! over the HTTP interface custom runtimes poll
//! (`/2018-06-01/runtime/invocation/next`, `.../{id}/response`,
//! `.../{id}/error`, `/2018-06-01/runtime/init/error`).
//!
//! Like a Lambda execution environment, one process handles one invocation
//! at a time and stays warm between them; a crash or a timeout discards it
//! and the next invocation starts a fresh one (a cold start).

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::engine::lock;
use crate::lambdas::EmbeddedLambda;

const API_PREFIX: &str = "/2018-06-01/runtime";

/// Where a function's log lines go: `(function label, line)`.
pub type LogSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Everything needed to run one function locally.
#[derive(Clone)]
pub struct FunctionSpec {
    /// Short label for log lines: `receiver`, `processor`, `dead-letter`.
    pub label: String,
    /// The function name it has on AWS (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    pub arn: String,
    pub package: &'static EmbeddedLambda,
    pub memory_mb: i32,
    pub timeout: Duration,
    /// The function's own environment (table, bucket, signing settings).
    pub env: BTreeMap<String, String>,
    /// Region, credentials and endpoint of the AWS the function talks to.
    pub aws_env: BTreeMap<String, String>,
}

impl std::fmt::Debug for FunctionSpec {
    // The environment holds secrets: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The result of one invocation, as Lambda reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler's response payload (JSON).
    Response(Vec<u8>),
    /// A function error: the runtime reported one, or the process crashed
    /// or timed out.
    Error { error_type: String, message: String },
}

impl Outcome {
    /// The payload Lambda's Invoke API would return for this outcome.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Outcome::Response(b) => b.clone(),
            Outcome::Error {
                error_type,
                message,
            } => serde_json::json!({ "errorType": error_type, "errorMessage": message })
                .to_string()
                .into_bytes(),
        }
    }
}

struct Invocation {
    id: String,
    event: Bytes,
    deadline_ms: u128,
}

/// What the runtime API of one execution environment shares with its
/// connection handlers.
struct ApiShared {
    next: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    replies: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    /// When the process first asked for an invocation: the end of its init.
    first_poll: Mutex<Option<Instant>>,
    arn: String,
}

/// One execution environment: the process and its private runtime API.
struct Environment {
    queue: mpsc::Sender<Invocation>,
    shared: Arc<ApiShared>,
    kill: Option<oneshot::Sender<()>>,
    /// `Some(exit status)` once the process has ended.
    exited: watch::Receiver<Option<String>>,
    // Dropping the set aborts the server and the log readers.
    _tasks: JoinSet<()>,
    started: Instant,
    init_reported: bool,
}

impl Environment {
    async fn stop(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        let _ = self.exited.wait_for(|e| e.is_some()).await;
    }
}

/// A function that can be invoked locally, one invocation at a time.
pub struct LocalFunction {
    spec: FunctionSpec,
    bootstrap: PathBuf,
    _dir: tempfile::TempDir,
    env: tokio::sync::Mutex<Option<Environment>>,
    logs: LogSink,
}

impl LocalFunction {
    /// Unpacks the embedded `bootstrap`; the process starts on the first
    /// invocation.
    pub fn new(spec: FunctionSpec, logs: LogSink) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("webhook-deploy-task-")
            .tempdir()
            .context("cannot create a temporary directory for the function's code")?;
        let bootstrap = dir.path().join("bootstrap");
        let bytes = unzip_bootstrap(spec.package.zip)
            .with_context(|| format!("the embedded package of {} is unreadable", spec.label))?;
        write_executable(&bootstrap, &bytes)?;
        Ok(Self {
            spec,
            bootstrap,
            _dir: dir,
            env: tokio::sync::Mutex::new(None),
            logs,
        })
    }

    pub fn spec(&self) -> &FunctionSpec {
        &self.spec
    }

    /// Invokes the function with `event` (JSON) and waits for its outcome,
    /// at most the function's timeout.
    pub async fn invoke(&self, event: &[u8]) -> Result<Outcome> {
        let mut guard = self.env.lock().await;
        if guard.as_ref().is_none_or(|e| e.exited.borrow().is_some()) {
            *guard = Some(self.start().await?);
        }
        let Some(env) = guard.as_mut() else {
            bail!(
                "the execution environment of {} did not start",
                self.spec.label
            );
        };
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        lock(&env.shared.replies).insert(id.clone(), tx);
        let deadline = SystemTime::now() + self.spec.timeout;
        let started = Instant::now();
        let cold = !env.init_reported;
        env.init_reported = true;
        (self.logs)(&self.spec.label, &format!("START RequestId: {id}"));
        env.queue
            .send(Invocation {
                id: id.clone(),
                event: Bytes::copy_from_slice(event),
                deadline_ms: deadline
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
            })
            .await
            .context("the function's runtime API stopped")?;
        let mut exited = env.exited.clone();
        let outcome = tokio::select! {
            r = rx => r.ok(),
            _ = tokio::time::sleep(self.spec.timeout) => {
                Some(Outcome::Error {
                    error_type: "Sandbox.Timedout".into(),
                    message: format!("Task timed out after {:.2} seconds", self.spec.timeout.as_secs_f64()),
                })
            }
            _ = exited.wait_for(|e| e.is_some()) => None,
        };
        let outcome = match outcome {
            Some(o) => o,
            None => {
                let init_error = lock(&env.shared.init_error).clone();
                let status = env.exited.borrow().clone().filter(|s| !s.is_empty());
                Outcome::Error {
                    error_type: if init_error.is_some() {
                        "Runtime.InitError".into()
                    } else {
                        "Runtime.ExitError".into()
                    },
                    message: match (init_error, status) {
                        (Some(e), _) => e,
                        (None, Some(s)) => format!("Runtime exited with error: {s}"),
                        (None, None) => "Runtime exited".into(),
                    },
                }
            }
        };
        let discard = matches!(&outcome, Outcome::Error { error_type, .. }
            if error_type.starts_with("Sandbox.") || error_type.starts_with("Runtime."));
        let mut report = format!(
            "REPORT RequestId: {id}\tDuration: {:.2} ms\tMemory Size: {} MB",
            started.elapsed().as_secs_f64() * 1000.0,
            self.spec.memory_mb
        );
        let init = (*lock(&env.shared.first_poll)).map(|t| t.duration_since(env.started));
        if let (true, Some(init)) = (cold, init) {
            report.push_str(&format!(
                "\tInit Duration: {:.2} ms",
                init.as_secs_f64() * 1000.0
            ));
        }
        (self.logs)(&self.spec.label, &format!("END RequestId: {id}"));
        (self.logs)(&self.spec.label, &report);
        if discard {
            // As Lambda does: the environment that crashed or timed out is
            // thrown away; the next invocation starts a new one.
            if let Some(env) = guard.take() {
                env.stop().await;
            }
        }
        Ok(outcome)
    }

    /// Stops the process (Ctrl-C, end of `invoke`).
    pub async fn shutdown(&self) {
        if let Some(env) = self.env.lock().await.take() {
            env.stop().await;
        }
    }

    async fn start(&self) -> Result<Environment> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot open a local port for the Lambda Runtime API")?;
        let addr = listener.local_addr()?;
        let (queue, next) = mpsc::channel(1);
        let shared = Arc::new(ApiShared {
            next: tokio::sync::Mutex::new(next),
            replies: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            first_poll: Mutex::new(None),
            arn: self.spec.arn.clone(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_runtime_api(listener, shared.clone()));
        let started = Instant::now();
        let mut child = self.spawn(addr)?;
        let label = self.spec.label.clone();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncRead>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = self.logs.clone();
            let label = label.clone();
            tasks.spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs(&label, &line);
                }
            });
        }
        // The process is owned by a task that reports its exit; `invoke`
        // asks that task to kill it.
        let (exit_tx, exited) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        tasks.spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                _ = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            let _ = exit_tx.send(Some(status.map(|s| s.to_string()).unwrap_or_default()));
        });
        Ok(Environment {
            queue,
            shared,
            kill: Some(kill),
            exited,
            _tasks: tasks,
            started,
            init_reported: false,
        })
    }

    fn spawn(&self, api: SocketAddr) -> Result<Child> {
        let s = &self.spec;
        let task_root = self.bootstrap.parent().unwrap_or(Path::new("/"));
        let mut cmd = Command::new(&self.bootstrap);
        cmd.env_clear();
        // Variables an operator's machine may need to reach AWS at all.
        for (k, v) in std::env::vars() {
            if PASS_THROUGH.contains(&k.as_str()) {
                cmd.env(k, v);
            }
        }
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TZ", ":UTC")
            .env("LAMBDA_TASK_ROOT", task_root)
            .env("_HANDLER", "bootstrap")
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &s.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", s.memory_mb.to_string())
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", s.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .envs(&s.aws_env)
            .envs(&s.env)
            .current_dir(task_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // A file just written can be briefly "busy" if another thread forked
        // while it was open (ETXTBSY); that passes within milliseconds.
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Ok(c) => return Ok(c),
                Err(e) if e.raw_os_error() == Some(26) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot start the {} function's bootstrap", s.label)
                    })
                }
            }
        }
    }
}

trait AsyncRead: tokio::io::AsyncRead + Unpin + Send {}
impl<T: tokio::io::AsyncRead + Unpin + Send> AsyncRead for T {}

/// Proxy and CA settings are passed through so a function run on an
/// operator's machine reaches AWS the way the operator's tools do.
const PASS_THROUGH: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "AWS_CA_BUNDLE",
    "RUST_LOG",
    "AWS_LAMBDA_LOG_LEVEL",
];

async fn serve_runtime_api(listener: tokio::net::TcpListener, shared: Arc<ApiShared>) {
    let mut conns = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(runtime_api(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

async fn runtime_api(shared: &ApiShared, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(API_PREFIX) else {
        return reply(StatusCode::NOT_FOUND, "unknown path");
    };
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["invocation", "next"]) => {
            lock(&shared.first_poll).get_or_insert_with(Instant::now);
            let inv = shared.next.lock().await.recv().await;
            let Some(inv) = inv else {
                return reply(StatusCode::GONE, "shutting down");
            };
            let mut r = reply(StatusCode::OK, inv.event);
            let h = r.headers_mut();
            let mut set = |k: &'static str, v: String| {
                if let Ok(v) = v.parse() {
                    h.insert(k, v);
                }
            };
            set("lambda-runtime-aws-request-id", inv.id);
            set("lambda-runtime-deadline-ms", inv.deadline_ms.to_string());
            set("lambda-runtime-invoked-function-arn", shared.arn.clone());
            set(
                "lambda-runtime-trace-id",
                format!(
                    "Root=1-{:08x}-{};Parent={};Sampled=0",
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    &uuid::Uuid::new_v4().simple().to_string()[..24],
                    &uuid::Uuid::new_v4().simple().to_string()[..16]
                ),
            );
            set("content-type", "application/json".into());
            r
        }
        (Method::POST, ["invocation", id, "response"]) => match lock(&shared.replies).remove(*id) {
            Some(tx) => {
                let _ = tx.send(Outcome::Response(body.to_vec()));
                reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
            }
            None => reply(StatusCode::BAD_REQUEST, "unknown request id"),
        },
        (Method::POST, ["invocation", id, "error"]) => {
            let (error_type, message) = parse_error(&body);
            match lock(&shared.replies).remove(*id) {
                Some(tx) => {
                    let _ = tx.send(Outcome::Error {
                        error_type,
                        message,
                    });
                    reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
                }
                None => reply(StatusCode::BAD_REQUEST, "unknown request id"),
            }
        }
        (Method::POST, ["init", "error"]) => {
            let (error_type, message) = parse_error(&body);
            *lock(&shared.init_error) = Some(format!("{error_type}: {message}"));
            reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown path"),
    }
}

fn parse_error(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    (
        s("errorType").unwrap_or_else(|| "Unhandled".into()),
        s("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    )
}

/// The `bootstrap` inside one of our deterministic zips (one entry,
/// deflated, see `embedded-lambdas/build-support/zip.rs`).
pub fn unzip_bootstrap(zip: &[u8]) -> Result<Vec<u8>> {
    let u16_at = |o: usize| -> Result<usize> {
        zip.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .context("truncated zip")
    };
    let u32_at = |o: usize| -> Result<usize> {
        zip.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .context("truncated zip")
    };
    if u32_at(0)? != 0x0403_4b50 {
        bail!("not a zip file");
    }
    let method = u16_at(8)?;
    let csize = u32_at(18)?;
    let usize_ = u32_at(22)?;
    let start = 30 + u16_at(26)? + u16_at(28)?;
    let data = zip.get(start..start + csize).context("truncated zip")?;
    let out = match method {
        0 => data.to_vec(),
        8 => {
            let mut out = Vec::with_capacity(usize_);
            flate2::read::DeflateDecoder::new(data).read_to_end(&mut out)?;
            out
        }
        m => bail!("unsupported zip compression method {m}"),
    };
    if out.len() != usize_ {
        bail!("zip entry size mismatch");
    }
    Ok(out)
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_package_unzips_to_an_elf_executable() {
        for l in &crate::lambdas::ALL {
            let bin = unzip_bootstrap(l.zip).unwrap();
            assert_eq!(&bin[..4], b"\x7fELF", "{}", l.name);
        }
    }

    #[test]
    fn a_foreign_file_is_refused() {
        assert!(unzip_bootstrap(b"not a zip at all, really not").is_err());
        assert!(unzip_bootstrap(b"PK\x03\x04").is_err());
    }

    #[test]
    fn runtime_errors_are_parsed_from_the_documented_shape() {
        let (t, m) = parse_error(br#"{"errorType":"Boom","errorMessage":"it broke"}"#);
        assert_eq!((t.as_str(), m.as_str()), ("Boom", "it broke"));
        let (t, m) = parse_error(b"plain text");
        assert_eq!((t.as_str(), m.as_str()), ("Unhandled", "plain text"));
    }
}
