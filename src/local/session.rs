//! The files `local` keeps in the state directory, beside the stack's state:
//!
//! - `<suffix>.local.json` / `.local.lock`: engine state of the table and
//!   bucket `local` created, and the lock held while it runs;
//! - `<suffix>.local-session.json`: where the running instance listens
//!   (read by `send --local`), removed when it stops;
//! - `<suffix>.local-stream.json`: the stream position, so a restart
//!   resumes where the last run stopped;
//! - `<suffix>.local-secrets.json` (mode 0600): the generated signing
//!   secret and API key of the local front door. Never in the state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::state::StatePaths;

pub struct LocalPaths {
    pub state: StatePaths,
    pub session: PathBuf,
    pub stream: PathBuf,
    pub secrets: PathBuf,
}

impl LocalPaths {
    pub fn new(dir: &Path, suffix: &str) -> Self {
        Self {
            state: StatePaths {
                file: dir.join(format!("{suffix}.local.json")),
                lock: dir.join(format!("{suffix}.local.lock")),
            },
            session: dir.join(format!("{suffix}.local-session.json")),
            stream: dir.join(format!("{suffix}.local-stream.json")),
            secrets: dir.join(format!("{suffix}.local-secrets.json")),
        }
    }
}

/// What `send --local` needs to reach a running `local`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub pid: u32,
    pub url: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub table_name: String,
    pub bucket_name: String,
    pub signature: String,
    pub api_key_required: bool,
    /// The variable the operator's signing secret came from (its name only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_env: Option<String>,
}

/// Secrets of the local front door (mode 0600 file).
#[derive(Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for LocalSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalSecrets(..)")
    }
}

/// Stream position per shard, for one stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamCheckpoint {
    pub stream_arn: String,
    /// The local mapping's id: the `<ESM-UUID>` of failure-record keys.
    pub mapping_uuid: String,
    /// Last sequence number fully handled, per shard.
    pub shards: BTreeMap<String, String>,
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).with_context(|| {
            format!(
                "{} is not a file webhook-deploy wrote; move it away and retry",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Atomic write (as the state file's) with the given mode.
pub fn write_json<T: Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    crate::engine::state::write_atomic(path, &serde_json::to_vec_pretty(value)?, Some(mode))
}

/// The running `local` of this stack, or a clear error.
pub fn running_session(paths: &LocalPaths, suffix: &str) -> Result<Session> {
    let Some(s) = read_json::<Session>(&paths.session)? else {
        bail!(
            "no local pipeline is running for stack '{suffix}' ({} not found): start `webhook-deploy local --suffix {suffix}` first, with the same --state-dir",
            paths.session.display()
        );
    };
    if !std::path::Path::new(&format!("/proc/{}", s.pid)).exists() {
        bail!(
            "the local pipeline recorded in {} (pid {}) is not running: start `webhook-deploy local --suffix {suffix}` again",
            paths.session.display(),
            s.pid
        );
    }
    Ok(s)
}
