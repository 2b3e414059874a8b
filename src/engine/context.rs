//! What a resource sees while it runs: clients, stack settings, the
//! attributes of resources already read or applied, and its progress line.

use crate::aws::Clients;
use crate::engine::progress::Progress;
use crate::engine::resource::Attrs;
use crate::stack::Settings;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A dependency's attribute that is not known yet (the dependency does not
/// exist and this is a dry run). Only `plan`/`status` ever see it.
#[derive(Debug, thiserror::Error)]
#[error("{key} of {id} is not known until {id} exists")]
pub struct Unknown {
    pub id: String,
    pub key: String,
}

#[derive(Clone)]
pub struct Cx {
    pub aws: Arc<Clients>,
    pub stack: Arc<Settings>,
    known: Arc<RwLock<HashMap<String, Attrs>>>,
    progress: Arc<Progress>,
    id: String,
}

impl Cx {
    pub fn new(aws: Arc<Clients>, stack: Arc<Settings>, progress: Arc<Progress>) -> Self {
        Self {
            aws,
            stack,
            known: Arc::default(),
            progress,
            id: String::new(),
        }
    }

    /// The same context, reporting progress as resource `id`.
    pub fn for_resource(&self, id: &str) -> Self {
        Self {
            id: id.to_string(),
            ..self.clone()
        }
    }

    /// An attribute of another resource; `Unknown` until it has been read or created.
    pub fn attr(&self, id: &str, key: &str) -> Result<String, Unknown> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known
            .get(id)
            .and_then(|a| a.get(key))
            .cloned()
            .ok_or_else(|| Unknown {
                id: id.to_string(),
                key: key.to_string(),
            })
    }

    pub fn publish(&self, id: &str, attrs: Attrs) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        known.insert(id.to_string(), attrs);
    }

    /// Shows what this resource is doing now (e.g. what it waits for).
    pub fn say(&self, msg: impl Into<String>) {
        self.progress.set(&self.id, msg.into());
    }

    pub(crate) fn progress_finish(&self, msg: String) {
        self.progress.finish(&self.id, msg);
    }
}
