//! The nested release build of the Lambda binaries, shared by the root
//! `build.rs` and the root reproducibility test (`#[path]`); std only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The three binaries, in the order the deployer lists them.
pub const BINARIES: [&str; 3] = ["receiver", "processor", "dead-letter-handler"];
/// Lambda `x86_64` on `provided.al2023` (glibc 2.34).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Custom profile in the root Cargo.toml (release + fat LTO + strip).
pub const PROFILE: &str = "lambda";

pub struct NestedBuild {
    pub cargo: PathBuf,
    pub workspace: PathBuf,
    /// Must differ from the outer build's target dir: sharing it deadlocks
    /// on cargo's build-directory lock.
    pub target_dir: PathBuf,
}

/// Inherited variables that would change what the nested build produces or
/// make it fight the outer build. `CARGO_MAKEFLAGS` is kept on purpose: it
/// lets the nested cargo share the outer job server instead of oversubscribing.
fn scrubbed(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_DIR",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_INCREMENTAL",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC_LINKER",
        "LLVM_PROFILE_FILE",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_BUILD_",
        "CARGO_PROFILE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_BIN_",
        "CARGO_LLVM_COV",
        "DEP_",
    ];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        // Per-target rustflags, e.g. CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS.
        || (name.starts_with("CARGO_TARGET_") && name.ends_with("RUSTFLAGS"))
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
}

impl NestedBuild {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        for (name, _) in std::env::vars_os() {
            if let Some(n) = name.to_str() {
                if scrubbed(n) {
                    cmd.env_remove(&name);
                }
            }
        }
        // Remap absolute paths (registry sources, this checkout, the target
        // dir) so the binary does not depend on where it was built. rustc
        // applies the last matching remap, so the most specific comes last.
        let mut remaps = Vec::new();
        if let Some(home) = cargo_home() {
            remaps.push(format!("--remap-path-prefix={}=/cargo", home.display()));
        }
        remaps.push(format!(
            "--remap-path-prefix={}=/build",
            self.workspace.display()
        ));
        remaps.push(format!(
            "--remap-path-prefix={}=/target",
            self.target_dir.display()
        ));
        cmd.env("CARGO_ENCODED_RUSTFLAGS", remaps.join("\x1f"));
        cmd.arg("build")
            .arg("--locked")
            .args(["--profile", PROFILE])
            .args(["--target", TARGET])
            .args(["-p", "embedded-lambdas", "--bins"])
            .arg("--manifest-path")
            .arg(self.workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&self.target_dir);
        cmd
    }

    pub fn binary_path(&self, name: &str) -> PathBuf {
        self.target_dir.join(TARGET).join(PROFILE).join(name)
    }
}
