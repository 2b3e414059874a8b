//! What a resource sees while it runs: clients, stack settings, the
//! attributes of resources already read or applied, and its progress line.

use crate::aws::Clients;
use crate::engine::progress::Progress;
use crate::engine::resource::Attrs;
use crate::stack::Settings;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

type Shared = Arc<tokio::sync::OnceCell<Arc<dyn Any + Send + Sync>>>;

/// A dependency's attribute that is not known yet (the dependency does not
/// exist and this is a dry run). Only `plan`/`status` ever see it.
#[derive(Debug, thiserror::Error)]
#[error("{key} of {id} is not known until {id} exists")]
pub struct Unknown {
    pub id: String,
    pub key: String,
}

/// The run was interrupted (Ctrl-C, SIGTERM) while a resource waited.
#[derive(Debug, thiserror::Error)]
#[error("stopped while {0}: the run was interrupted")]
pub struct Stopped(pub String);

/// Attributes a read looked up: (resource id, key, value; `None` when unknown).
pub type Used = Vec<(String, String, Option<String>)>;

/// The state file's attributes per resource, for reads ahead of the graph.
pub type Recorded = Arc<HashMap<String, Attrs>>;

#[derive(Clone)]
pub struct Cx {
    pub aws: Arc<Clients>,
    pub stack: Arc<Settings>,
    known: Arc<RwLock<HashMap<String, Attrs>>>,
    progress: Arc<Progress>,
    id: String,
    /// A read ahead of the graph: attributes not published yet come from
    /// the state file's records, and every lookup is noted so the engine
    /// can tell later whether the read saw what its dependencies published.
    ahead: Option<(Recorded, Arc<Mutex<Used>>)>,
    /// Answers of the opening round's batched reads, by call.
    shared: Arc<Mutex<HashMap<String, Shared>>>,
    /// This run created the resource's container (`Resource::inside`).
    new_container: bool,
    /// Set when the run is interrupted: waits end early.
    stop: Arc<AtomicBool>,
}

impl Cx {
    pub fn new(aws: Arc<Clients>, stack: Arc<Settings>, progress: Arc<Progress>) -> Self {
        Self {
            aws,
            stack,
            known: Arc::default(),
            progress,
            id: String::new(),
            ahead: None,
            shared: Arc::default(),
            new_container: false,
            stop: Arc::default(),
        }
    }

    /// The same context, whose waits end when `stop` is set.
    pub fn with_stop(self, stop: Arc<AtomicBool>) -> Self {
        Self { stop, ..self }
    }

    /// Whether the run was interrupted.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less if the run is interrupted meanwhile: a
    /// retry or poll must not hold an interrupted run for minutes.
    pub async fn pause(&self, d: Duration, what: &str) -> Result<(), Stopped> {
        self.unless_stopped(what, tokio::time::sleep(d)).await
    }

    /// Runs `fut` (an SDK waiter, a poll) unless the run is interrupted first.
    pub async fn unless_stopped<T>(
        &self,
        what: &str,
        fut: impl Future<Output = T>,
    ) -> Result<T, Stopped> {
        let stopped = async {
            while !self.stopped() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            t = fut => Ok(t),
            () = stopped => Err(Stopped(what.to_string())),
        }
    }

    /// One call that answers several resources' reads (a Describe for all
    /// the stack's subnets): in the opening round of reads it is made once
    /// and its answer shared under `key`; any other read makes it afresh,
    /// since the run may have changed what it describes since.
    pub async fn batched<T, F, Fut>(&self, key: &str, fetch: F) -> anyhow::Result<Arc<T>>
    where
        T: Any + Send + Sync,
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        if self.ahead.is_none() {
            return fetch().await.map(Arc::new);
        }
        let cell = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let any = cell
            .get_or_try_init(|| async {
                fetch()
                    .await
                    .map(|t| Arc::new(t) as Arc<dyn Any + Send + Sync>)
            })
            .await?
            .clone();
        any.downcast::<T>()
            .map_err(|_| anyhow::anyhow!("batched read {key} used with two answer types"))
    }

    /// The context for a read ahead of the graph as resource `id`, with
    /// `recorded` (the state file's attributes) standing in for attributes
    /// not published yet.
    pub(crate) fn read_ahead(&self, id: &str, recorded: Recorded) -> (Self, Arc<Mutex<Used>>) {
        let used = Arc::new(Mutex::new(Vec::new()));
        let cx = Self {
            id: id.to_string(),
            ahead: Some((recorded, used.clone())),
            ..self.clone()
        };
        (cx, used)
    }

    /// The same context, reporting progress as resource `id`.
    pub fn for_resource(&self, id: &str) -> Self {
        Self {
            id: id.to_string(),
            new_container: false,
            ..self.clone()
        }
    }

    /// The same context, for a resource whose container this run created.
    pub(crate) fn in_new_container(self) -> Self {
        Self {
            new_container: true,
            ..self
        }
    }

    /// Whether this run created the resource's container, which then holds
    /// nothing but what the run puts there.
    pub fn container_is_new(&self) -> bool {
        self.new_container
    }

    /// An attribute of another resource; `Unknown` until it has been read or created.
    pub fn attr(&self, id: &str, key: &str) -> Result<String, Unknown> {
        let found = {
            let known = self.known.read().unwrap_or_else(|p| p.into_inner());
            known.get(id).and_then(|a| a.get(key)).cloned()
        };
        let found = match &self.ahead {
            None => found,
            Some((recorded, used)) => {
                let v = found.or_else(|| recorded.get(id).and_then(|a| a.get(key)).cloned());
                used.lock().unwrap_or_else(|p| p.into_inner()).push((
                    id.to_string(),
                    key.to_string(),
                    v.clone(),
                ));
                v
            }
        };
        found.ok_or_else(|| Unknown {
            id: id.to_string(),
            key: key.to_string(),
        })
    }

    /// Whether every attribute a read ahead looked up has the value now
    /// published (or is still unknown, if it was then).
    pub(crate) fn saw_published(&self, used: &Used) -> bool {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        used.iter()
            .all(|(id, key, v)| known.get(id).and_then(|a| a.get(key)) == v.as_ref())
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
