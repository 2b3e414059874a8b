//! Checks on the Lambda zips that build.rs embeds: content and mode of the
//! single `bootstrap` entry, the published hashes, the glibc ceiling of
//! Amazon Linux 2023, and (ignored by default, ~5 min) a bit-identical rebuild
//! in another target directory.
//!
//! Zips are inspected with Python's `zipfile` (an independent reader) and the
//! binaries with `objdump -T`.

#[allow(dead_code)]
#[path = "../src/lambdas.rs"]
mod lambdas;

#[allow(dead_code)]
#[path = "../embedded-lambdas/build-support/nested.rs"]
mod nested;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Amazon Linux 2023 (provided.al2023) ships glibc 2.34.
const MAX_GLIBC: (u32, u32) = (2, 34);
const MAX_ZIP_BYTES: usize = 5 * 1024 * 1024;

const INSPECT: &str = r#"
import json, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
out = []
for i in z.infolist():
    out.append({"name": i.filename, "mode": i.external_attr >> 16, "date": list(i.date_time),
                "system": i.create_system, "extra": len(i.extra), "method": i.compress_type})
z.extractall(sys.argv[2])
print(json.dumps(out))
"#;

/// Writes the embedded zip to `dir`, lists it and extracts it with Python.
fn inspect(l: &lambdas::EmbeddedLambda, dir: &Path) -> (serde_json::Value, PathBuf) {
    let zip_path = dir.join(format!("{}.zip", l.name));
    std::fs::write(&zip_path, l.zip).unwrap();
    let extract = dir.join(l.name);
    let out = Command::new("python3")
        .args(["-c", INSPECT])
        .arg(&zip_path)
        .arg(&extract)
        .output()
        .expect("python3 is needed to inspect the zips");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        extract.join("bootstrap"),
    )
}

#[test]
fn each_zip_holds_exactly_one_executable_bootstrap_and_matching_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<_> = lambdas::ALL.iter().map(|l| l.name).collect();
    assert_eq!(names, ["receiver", "processor", "dead-letter-handler"]);
    for l in &lambdas::ALL {
        let (entries, bootstrap) = inspect(l, dir.path());
        assert_eq!(
            entries,
            serde_json::json!([{
                "name": "bootstrap",
                "mode": 0o100755,
                "date": [1980, 1, 1, 0, 0, 0],
                "system": 3,
                "extra": 0,
                "method": 8,
            }]),
            "{}",
            l.name
        );
        let elf = std::fs::read(&bootstrap).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF", "{} is an ELF executable", l.name);

        let digest = Sha256::digest(l.zip);
        assert_eq!(l.sha256_hex, hex::encode(digest));
        assert_eq!(
            l.sha256_b64,
            base64::engine::general_purpose::STANDARD.encode(digest)
        );
        assert!(
            l.zip.len() <= MAX_ZIP_BYTES,
            "{}: {} bytes",
            l.name,
            l.zip.len()
        );
        assert!(std::ptr::eq(lambdas::get(l.name).unwrap(), l));
    }
    assert!(lambdas::get("nope").is_none());
    let report = lambdas::lambdas_report();
    assert_eq!(report.as_array().unwrap().len(), 3);
    assert_eq!(report[0]["zipBytes"], lambdas::ALL[0].zip.len());
}

/// Highest `GLIBC_x.y` symbol version a binary requires.
fn max_glibc(binary: &Path) -> (u32, u32) {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .expect("objdump (binutils) is needed for the glibc check");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut max = (0, 0);
    for token in text.split(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let Some(v) = token.strip_prefix("GLIBC_") else {
            continue;
        };
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let ver = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        max = max.max(ver);
    }
    assert!(max > (0, 0), "no GLIBC symbol versions found");
    max
}

#[test]
fn binaries_need_at_most_glibc_2_34() {
    let dir = tempfile::tempdir().unwrap();
    for l in &lambdas::ALL {
        let (_, bootstrap) = inspect(l, dir.path());
        let max = max_glibc(&bootstrap);
        assert!(
            max <= MAX_GLIBC,
            "{} needs GLIBC_{}.{} (> {}.{}, Amazon Linux 2023)",
            l.name,
            max.0,
            max.1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
    }
}

/// Rebuilds the binaries exactly as build.rs does, into a fresh target
/// directory, and compares them with the embedded ones byte for byte.
/// Slow (a cold release build, ~5-9 min on 2 cores): run explicitly with
/// `cargo test --test lambda_build -- --ignored`.
#[test]
#[ignore = "cold release build of the Lambda binaries"]
fn rebuild_in_another_target_dir_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let build = nested::NestedBuild {
        cargo: std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| "cargo".into()),
        // The run-time value names this checkout even if the binary was
        // built from another clone sharing the target directory.
        workspace: std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        target_dir: dir.path().join("target"),
    };
    let status = build.command().status().unwrap();
    assert!(status.success());
    let extract = dir.path().join("embedded");
    std::fs::create_dir_all(&extract).unwrap();
    for l in &lambdas::ALL {
        let (_, bootstrap) = inspect(l, &extract);
        let embedded = std::fs::read(bootstrap).unwrap();
        let rebuilt = std::fs::read(build.binary_path(l.name)).unwrap();
        assert!(embedded == rebuilt, "{} differs after a rebuild", l.name);
    }
}
