//! The contract every resource kind implements.

use crate::engine::context::Cx;
use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Attributes a resource exposes to its dependents (ARNs, IDs, names).
pub type Attrs = BTreeMap<String, String>;

/// One field whose live value differs from the desired one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub field: String,
    pub want: String,
    pub have: String,
}

impl Drift {
    pub fn new(field: &str, want: impl fmt::Display, have: impl fmt::Display) -> Self {
        Self {
            field: field.to_string(),
            want: want.to_string(),
            have: have.to_string(),
        }
    }
}

/// Compares one field and records a drift when it differs.
pub fn check<T: PartialEq + Serialize>(drift: &mut Vec<Drift>, field: &str, want: &T, have: &T) {
    if want != have {
        let show = |v: &T| serde_json::to_string(v).unwrap_or_default();
        drift.push(Drift::new(field, show(want), show(have)));
    }
}

/// What `read` found: the live object's identity, the attributes dependents
/// need, and how it differs from the desired spec.
#[derive(Clone, Debug, Default)]
pub struct Live {
    pub physical_id: String,
    pub attrs: Attrs,
    pub drift: Vec<Drift>,
    /// Set by a `create` that found the object already there (a conflict)
    /// and converged it instead: reported as adopted, and not an empty
    /// container (see `Resource::inside`).
    pub adopted: bool,
    /// Whose the object says it is (its stack tag), for adoption by name.
    pub owner: Owner,
}

/// Whose an object found by name says it is. Only an object of this stack
/// is adopted without a record: one with the stack's name and no tag, or
/// another stack's tag, may belong to something else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    /// Not told: the object carries no tags of its own (it lives inside one
    /// that does), or was found by its tags in the first place.
    #[default]
    Unknown,
    /// Taggable, but without the stack tag.
    Untagged,
    /// Its stack tag's value (for global names, with the region: `suffix@region`).
    Stack(String),
}

/// `up` will not take the object over (another stack's, or untagged):
/// the run stops before its first change.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Live {
    pub fn new(physical_id: impl Into<String>) -> Self {
        Self {
            physical_id: physical_id.into(),
            ..Self::default()
        }
    }
    pub fn attr(mut self, key: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(key.to_string(), value.into());
        self
    }
    pub fn adopted(mut self) -> Self {
        self.adopted = true;
        self
    }
}

/// The state file's record of one resource.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub kind: String,
    pub physical_id: String,
    #[serde(default)]
    pub attrs: Attrs,
    /// The desired spec last applied (never secrets).
    #[serde(default)]
    pub applied: serde_json::Value,
    /// An operation that was started but not confirmed (the run may have
    /// been killed mid-call): the next run looks the object up by name/tag
    /// and adopts or finishes it instead of creating a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl Record {
    /// The record, unless it only says an operation was started.
    pub fn confirmed(&self) -> Option<&Record> {
        self.pending.is_none().then_some(self)
    }
}

#[async_trait]
pub trait Resource: Send + Sync {
    /// Stable logical id, the key in the state file.
    fn id(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// Logical ids this resource needs (their attributes, or their existence).
    fn depends_on(&self) -> Vec<String>;
    /// The desired spec, recorded in state as "applied" (no secrets).
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value>;
    /// Finds the live object by recorded id, else by deterministic name or
    /// tags; `None` when it does not exist. Never mutates.
    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>>;
    async fn create(&self, cx: &Cx) -> Result<Live>;
    /// Brings an existing object to the desired spec; `live.drift` says what differs.
    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live>;
    /// Deletes the object; returns false when it was already gone.
    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool>;
    /// `down`: why this object stays instead (it holds data that the run
    /// was not told to delete), or `None` to delete it. What is kept keeps
    /// its record, so a later `up` takes it up again.
    async fn keep(&self, _cx: &Cx, _rec: Option<&Record>) -> Result<Option<String>> {
        Ok(None)
    }
    /// False when the stack's options leave this resource out (e.g. the
    /// network with `--no-vpc`): `up` deletes it if it exists, `plan` and
    /// `status` report it as to be deleted. `read` is still called to find it.
    fn wanted(&self) -> bool {
        true
    }
    /// The dependency this resource lives inside (a REST API's routes, a
    /// VPC's subnets), when creating that one always makes a new, empty
    /// object: if `up` just created it (or `plan` found it missing), this
    /// resource cannot exist yet and is created without being looked for.
    /// When the state file records neither, the opening reads leave this
    /// one out and it is looked for in the walk, if at all.
    fn inside(&self) -> Option<&str> {
        None
    }

    /// Deleting this object deletes everything inside it (a REST API its
    /// routes, methods, deployments and stages): `down` deletes it as soon
    /// as what depends on its contents is gone, and its contents go with it
    /// without calls of their own.
    fn deletes_contents(&self) -> bool {
        false
    }
}
