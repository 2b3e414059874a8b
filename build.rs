//! Builds the three Lambda binaries (nested release build of the
//! `embedded-lambdas` crate), packages each as a deterministic zip holding one
//! executable `bootstrap`, and writes the zips and their SHA-256 to OUT_DIR
//! for `src/lambdas.rs` to embed.
//!
//! Why a nested build rather than committed zips: a plain `cargo build` /
//! `cargo install --path .` always embeds code that matches the sources, and
//! the nested cargo is incremental (a no-op re-run costs about a second). It
//! runs only when the Lambda sources, manifests or lock file change.
//! `WEBHOOK_DEPLOY_LAMBDA_ZIPS=<dir>` embeds prebuilt `<name>.zip` instead
//! (packaging, or skipping the ~5 min cold build).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

#[path = "embedded-lambdas/build-support/nested.rs"]
mod nested;
#[path = "embedded-lambdas/build-support/zip.rs"]
mod zip;

const PREBUILT_ENV: &str = "WEBHOOK_DEPLOY_LAMBDA_ZIPS";

fn main() {
    if let Err(e) = run() {
        // A clear message instead of a panic backtrace.
        eprintln!("error: building the embedded Lambda functions failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let workspace = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    println!("cargo:rerun-if-env-changed={PREBUILT_ENV}");
    for path in [
        "embedded-lambdas/src",
        "embedded-lambdas/build-support",
        "embedded-lambdas/Cargo.toml",
        "Cargo.lock",
        // The `[profile.lambda]` section lives here.
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }

    if let Some(dir) = std::env::var_os(PREBUILT_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        for name in nested::BINARIES {
            let src = dir.join(format!("{name}.zip"));
            println!("cargo:rerun-if-changed={}", src.display());
            let zip = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
            write_outputs(&out_dir, name, &zip)?;
        }
        return Ok(());
    }

    let target_root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let build = nested::NestedBuild {
        cargo: PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
        workspace: workspace.clone(),
        target_dir: target_root.join("lambda-build"),
    };
    let mut cmd = build.command();
    // Keep our stdout for `cargo:` directives only.
    cmd.stdout(std::io::stderr());
    let status = cmd
        .status()
        .map_err(|e| format!("running nested cargo: {e}"))?;
    if !status.success() {
        return Err(format!("nested cargo build exited with {status}"));
    }
    for name in nested::BINARIES {
        let bin_path = build.binary_path(name);
        let bin = std::fs::read(&bin_path).map_err(|e| format!("{}: {e}", bin_path.display()))?;
        let zip = zip::zip_bootstrap(&bin).map_err(|e| format!("zipping {name}: {e}"))?;
        write_outputs(&out_dir, name, &zip)?;
    }
    Ok(())
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// `<name>.zip`, `<name>.sha256.b64` (Lambda's `CodeSha256` form) and
/// `<name>.sha256.hex`, written only when changed so mtimes stay stable.
fn write_outputs(out_dir: &Path, name: &str, zip: &[u8]) -> Result<(), String> {
    let digest = Sha256::digest(zip);
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
    let hex = hex::encode(digest);
    write_if_changed(&out_dir.join(format!("{name}.zip")), zip)?;
    write_if_changed(&out_dir.join(format!("{name}.sha256.b64")), b64.as_bytes())?;
    write_if_changed(&out_dir.join(format!("{name}.sha256.hex")), hex.as_bytes())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
