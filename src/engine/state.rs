//! The state file `state/<suffix>.json` and its lock.
//!
//! State is a cache of physical ids and attributes: AWS is the truth and
//! every resource can be found again by name or tag. It is rewritten
//! atomically: the intent to create and a deletion before the step goes on,
//! a result with the next write (at the latest the run's last), so a killed
//! run leaves at most intents, which the next run resolves by name or tag.

use crate::engine::resource::Record;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// 2: the stack's settings are recorded (`settings`). A version-1 file is
/// read as one without them; an older webhook-deploy refuses a version-2
/// file instead of reverting its settings.
pub const STATE_VERSION: u32 = 2;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// Identifies this stack's history; a state file copied from another
    /// stack cannot be mistaken for this one.
    pub lineage: String,
    /// Incremented on every write.
    pub serial: u64,
    pub suffix: String,
    pub region: String,
    pub account: String,
    /// The stack's own settings, as its definition records them (key →
    /// value); `None` in a file written before settings were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub resources: BTreeMap<String, Record>,
}

impl State {
    pub fn new(suffix: &str, region: &str, account: &str) -> Self {
        Self {
            version: STATE_VERSION,
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            suffix: suffix.into(),
            region: region.into(),
            account: account.into(),
            settings: None,
            resources: BTreeMap::new(),
        }
    }

    /// Refuses a state file that another stack's file was copied over (the
    /// file is named after the suffix, so `--suffix` alone cannot fix it).
    pub fn check_suffix(&self, path: &Path, suffix: &str) -> Result<()> {
        if self.suffix != suffix {
            let home = path.with_file_name(format!("{}.json", self.suffix));
            bail!(
                "state file {} belongs to stack '{}', not '{}' (copied or renamed?); move it back to {} or pass the --state-dir that holds {suffix}.json",
                path.display(),
                self.suffix,
                suffix,
                home.display()
            );
        }
        Ok(())
    }

    /// Refuses a state file written for another region, without AWS: for
    /// commands that read only the file (`outputs`), when `--region` names one.
    pub fn check_region(&self, path: &Path, region: &str) -> Result<()> {
        if self.region != region {
            bail!(
                "state file {} was written for region {} but this run targets {}; pass --region {} or use another --state-dir",
                path.display(),
                self.region,
                region,
                self.region
            );
        }
        Ok(())
    }

    /// Refuses a state file that belongs to another stack, region or account.
    pub fn check_matches(
        &self,
        path: &Path,
        suffix: &str,
        region: &str,
        account: &str,
    ) -> Result<()> {
        self.check_suffix(path, suffix)?;
        self.check_region(path, region)?;
        self.check_account(path, account)
    }

    /// Refuses a state file written for another account.
    pub fn check_account(&self, path: &Path, account: &str) -> Result<()> {
        if self.account != account {
            bail!(
                "state file {} was written for account {} but the credentials are for account {}; use the matching credentials or another --state-dir",
                path.display(),
                self.account,
                account
            );
        }
        Ok(())
    }
}

/// Where one stack's state lives.
#[derive(Clone, Debug)]
pub struct StatePaths {
    pub file: PathBuf,
    pub lock: PathBuf,
}

impl StatePaths {
    pub fn new(dir: &Path, suffix: &str) -> Self {
        Self {
            file: dir.join(format!("{suffix}.json")),
            lock: dir.join(format!("{suffix}.lock")),
        }
    }
}

/// Reads the state file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<State>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read state file {}", path.display()))
        }
    };
    // Look at the version before the full schema, so a newer file is named
    // as such rather than as "corrupt".
    let raw: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "state file {} is not valid JSON ({e}); restore it from a backup or move it away (resources are re-adopted by name on the next `up`)",
            path.display()
        )
    })?;
    let version = raw.get("version").and_then(|v| v.as_u64());
    match version {
        Some(v) if v > STATE_VERSION as u64 => bail!(
            "state file {} has schema version {v}, newer than this webhook-deploy understands ({STATE_VERSION}); upgrade webhook-deploy",
            path.display()
        ),
        Some(_) => {}
        None => bail!(
            "state file {} is not a webhook-deploy state file (no \"version\"); move it away or point --state-dir elsewhere",
            path.display()
        ),
    }
    let state: State = serde_json::from_value(raw).map_err(|e| {
        anyhow::anyhow!(
            "state file {} is damaged ({e}); restore it from a backup or move it away (resources are re-adopted by name on the next `up`)",
            path.display()
        )
    })?;
    Ok(Some(state))
}

/// The file's bytes, made in memory: serde_json writes token by token, and
/// the temporary file is unbuffered (tens of thousands of syscalls per save
/// otherwise).
fn text(state: &State) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(state)?;
    text.push(b'\n');
    Ok(text)
}

/// Saves a run's state file off the async worker threads (an fsync can take
/// milliseconds), one write at a time. A write covers every change made
/// before it starts, so changes that come in while one is in flight share
/// the next write (group commit); each caller still returns only once its
/// own change is on disk.
pub struct Writer {
    path: PathBuf,
    /// The serial of the last state written (or loaded). Held by the
    /// blocking write itself, so a caller that stops waiting cannot let a
    /// newer write overtake an older one still in progress.
    written: Arc<tokio::sync::Mutex<u64>>,
}

impl Writer {
    pub fn new(path: PathBuf, serial_on_disk: u64) -> Self {
        Self {
            path,
            written: Arc::new(tokio::sync::Mutex::new(serial_on_disk)),
        }
    }

    /// Returns once the state with serial `serial` (or a later one) is saved.
    pub async fn save(&self, state: &std::sync::Mutex<State>, serial: u64) -> Result<()> {
        let mut written = self.written.clone().lock_owned().await;
        if *written >= serial {
            return Ok(());
        }
        let (text, now) = {
            let st = super::lock(state);
            (text(&st)?, st.serial)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomic(&path, &text, None)?;
            *written = now;
            Ok::<_, anyhow::Error>(())
        })
        .await
        .context("the state writer stopped")?
    }
}

/// Replaces `path` atomically: temp file in the same directory (mode
/// `mode`, else the temp file's 0600), fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    if let Some(mode) = mode {
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on one stack. The OS releases it when the
/// holder exits, however it exits, so a killed run never leaves it stale.
#[derive(Debug)]
pub struct StackLock {
    _file: File,
}

impl StackLock {
    pub fn acquire(path: &Path, command: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another webhook-deploy process"
                } else {
                    holder
                };
                bail!(
                    "the stack is locked by {holder} (lock file {}); wait for that run to finish",
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let info = format!(
            "pid {} (webhook-deploy {command}) on host {} since {}",
            std::process::id(),
            host.trim(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(info.as_bytes())?;
        file.sync_all()?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writer_saves_and_one_write_covers_earlier_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.json");
        let state = std::sync::Mutex::new(State::new("dev", "us-east-1", "123456789012"));
        let writer = Writer::new(p.clone(), 0);
        state.lock().unwrap().serial = 7;
        writer.save(&state, 7).await.unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), *state.lock().unwrap());
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        // Two changes, then the first change's save: it writes both, and
        // the second change's save finds nothing left to write.
        state.lock().unwrap().serial = 8;
        state.lock().unwrap().serial = 9;
        writer.save(&state, 8).await.unwrap();
        assert_eq!(load(&p).unwrap().unwrap().serial, 9);
        fs::remove_file(&p).unwrap();
        writer.save(&state, 9).await.unwrap();
        assert!(!p.exists(), "serial 9 was already on disk: no second write");
        state.lock().unwrap().serial = 10;
        writer.save(&state, 10).await.unwrap();
        assert_eq!(load(&p).unwrap().unwrap().serial, 10);
    }

    #[test]
    fn refuses_corrupt_newer_and_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.json");
        fs::write(&p, "{not json").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("not valid JSON"));
        fs::write(&p, r#"{"version": 99}"#).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("newer"));
        fs::write(&p, r#"{"hello": 1}"#).unwrap();
        assert!(load(&p)
            .unwrap_err()
            .to_string()
            .contains("not a webhook-deploy state file"));
        let s = State::new("dev", "eu-west-1", "123456789012");
        // prod.json copied over dev.json: --suffix prod would read prod.json.
        let e = s
            .check_matches(
                &dir.path().join("prod.json"),
                "prod",
                "eu-west-1",
                "123456789012",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("belongs to stack 'dev', not 'prod'"), "{e}");
        assert!(
            e.contains(&format!("move it back to {}", p.display())),
            "{e}"
        );
        let e = s
            .check_matches(&p, "dev", "us-east-1", "123456789012")
            .unwrap_err();
        assert!(e.to_string().contains("region eu-west-1"));
        let e = s
            .check_matches(&p, "dev", "eu-west-1", "999999999999")
            .unwrap_err();
        assert!(e.to_string().contains("account"));
    }

    #[test]
    fn lock_is_exclusive_and_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev.lock");
        let held = StackLock::acquire(&p, "up").unwrap();
        let e = StackLock::acquire(&p, "down").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("webhook-deploy up"), "{e}");
        drop(held);
        StackLock::acquire(&p, "down").unwrap();
    }
}
