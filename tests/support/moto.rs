//! A moto AWS emulator for tests: either an already running server (`MOTO_ENDPOINT`) or a
//! `moto_server` child process on a free local port, killed on drop.
//!
//! Only `std` is used so this file can be included from any crate via `#[path = ...]`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a spawned `moto_server` to answer HTTP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Moto {
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub endpoint: String,
    /// `None` when `MOTO_ENDPOINT` points at an externally managed server.
    child: Option<Child>,
    log_path: Option<PathBuf>,
}

impl Moto {
    /// Uses `MOTO_ENDPOINT` if set, else spawns `$MOTO_SERVER` or `<repo>/.venv/bin/moto_server`
    /// and waits until it answers HTTP. Panics (never skips) if the executable is missing.
    pub fn start() -> Moto {
        Self::start_with(true)
    }

    /// Always a new `moto_server` child, even when `MOTO_ENDPOINT` is set.
    pub fn start_own() -> Moto {
        Self::start_with(false)
    }

    fn start_with(shared_ok: bool) -> Moto {
        if let Some(ep) = std::env::var("MOTO_ENDPOINT").ok().filter(|_| shared_ok) {
            let ep = ep.trim().trim_end_matches('/').to_string();
            if !ep.is_empty() {
                return Moto {
                    endpoint: ep,
                    child: None,
                    log_path: None,
                };
            }
        }

        let exe = moto_executable();
        if !exe.is_file() {
            panic!(
                "moto_server not found at {}. Install the pinned AWS emulator with \
                 `scripts/setup-moto.sh` (run from the repository root; creates .venv with \
                 moto[server]==5.2.5), or set MOTO_SERVER=/path/to/moto_server, or set \
                 MOTO_ENDPOINT=http://host:port to use an already running moto server.",
                exe.display()
            );
        }

        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let log_path =
            std::env::temp_dir().join(format!("moto-server-{}-{}.log", std::process::id(), port));
        let log = std::fs::File::create(&log_path).expect("create moto log file");
        let log_err = log.try_clone().expect("clone moto log file handle");

        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("MOTO_IAM_LOAD_MANAGED_POLICIES")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "failed to spawn {}: {e}. Reinstall it with `scripts/setup-moto.sh`.",
                    exe.display()
                )
            });

        let mut moto = Moto {
            endpoint,
            child: Some(child),
            log_path: Some(log_path),
        };
        moto.wait_ready(port);
        moto
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "moto_server exited during startup ({status}); log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if http_status(&format!("127.0.0.1:{port}"), "GET", "/").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "moto_server did not answer HTTP on {} within {:?}; log:\n{}",
                    self.endpoint,
                    STARTUP_TIMEOUT,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Host and port of the endpoint, e.g. `127.0.0.1:5000`.
    pub fn authority(&self) -> String {
        authority_of(&self.endpoint)
    }

    /// Resets all moto state (`POST /moto-api/reset`). Useful with a shared `MOTO_ENDPOINT`.
    pub fn reset(&self) {
        let status = http_status(&self.authority(), "POST", "/moto-api/reset");
        assert_eq!(status, Some(200), "moto reset failed on {}", self.endpoint);
    }

    /// The server's log so far (empty for an external server).
    pub fn log(&self) -> String {
        self.log_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = self.log_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The repository root: the first ancestor of `CARGO_MANIFEST_DIR` containing
/// `scripts/setup-moto.sh` (falls back to `CARGO_MANIFEST_DIR`).
pub fn repo_root() -> PathBuf {
    // cargo and nextest set it when they run a test too: that value names
    // this checkout even when the binary was built from another clone that
    // shares the target directory (CI), where the compile-time one would not.
    let at_run = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest = at_run
        .as_deref()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")));
    manifest
        .ancestors()
        .find(|d| d.join("scripts").join("setup-moto.sh").is_file())
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `$MOTO_SERVER` if set, else `<repo root>/.venv/bin/moto_server`.
pub fn moto_executable() -> PathBuf {
    match std::env::var_os("MOTO_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv").join("bin").join("moto_server"),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn authority_of(endpoint: &str) -> String {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Minimal blocking HTTP/1.1 request; returns the status code if the server answered.
fn http_status(authority: &str, method: &str, path: &str) -> Option<u16> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got);
    if !head.starts_with("HTTP/1.") {
        return None;
    }
    head.get(9..12)?.parse().ok()
}
