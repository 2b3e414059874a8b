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

pub fn wait(child: Child) -> Out {
    let o = child.wait_with_output().expect("wait for webhook-deploy");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}
