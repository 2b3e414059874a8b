//! Running the deployer binary in a test: one moto, one recording proxy in
//! front of it, one temporary state directory.

use super::moto::Moto;
use super::proxy::Proxy;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Env {
    pub moto: Moto,
    pub proxy: Proxy,
    pub dir: tempfile::TempDir,
    pub suffix: String,
}

impl Env {
    pub fn start(suffix: &str) -> Self {
        let moto = Moto::start();
        let proxy = Proxy::start(&moto.endpoint);
        Self {
            moto,
            proxy,
            dir: tempfile::tempdir().expect("temp state dir"),
            suffix: suffix.into(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join(format!("{}.json", self.suffix))
    }

    /// The binary with `--state-dir`, `--suffix` and `args`, through the proxy.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = super::deployer(&self.proxy.endpoint(), self.state_dir());
        c.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--suffix")
            .arg(&self.suffix)
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        run(self.cmd(args))
    }

    /// Starts the binary without waiting (for kill and signal tests).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn webhook-deploy")
    }

    /// SDK configuration pointing at moto directly, so test reads do not
    /// show up among the deployer's recorded calls.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        super::sdk_config(&self.moto.endpoint).await
    }
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn run(mut c: Command) -> Out {
    let o = c.stdin(Stdio::null()).output().expect("run webhook-deploy");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

/// Runs `c` on a pseudo-terminal (util-linux `script`), typing `typed`
/// (a line) at it: for what a command does only when a person is there.
/// Everything it writes comes back in `stdout`.
pub fn on_a_terminal(c: &Command, typed: &str) -> Out {
    use std::io::Write as _;
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"));
    let line = std::iter::once(quote(c.get_program()))
        .chain(c.get_args().map(quote))
        .collect::<Vec<_>>()
        .join(" ");
    let mut t = Command::new("script");
    t.args(["-qec", &line, "/dev/null"]);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let mut child = t
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs the command on a terminal");
    let mut stdin = child.stdin.take().expect("stdin");
    // Typed once the prompt is up; the pipe stays open until the end, so
    // the terminal sees no end of input before the command is done.
    let typed = typed.to_string();
    let typer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let _ = stdin.write_all(format!("{typed}\n").as_bytes());
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(stdin);
    });
    let out = wait(child);
    drop(typer);
    out
}

pub fn wait(child: Child) -> Out {
    let o = child.wait_with_output().expect("wait for webhook-deploy");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}
