//! The reconciler: walks the stack's resource graph and, per resource,
//! reads the live object, compares it with the desired spec, and creates,
//! updates, deletes or leaves it.

pub mod context;
pub mod graph;
pub mod progress;
pub mod resource;
pub mod state;

use anyhow::Result;
use context::{Cx, Unknown};
use graph::{Node, Outcome};
use resource::{Drift, Record, Resource};
use serde::Serialize;
use state::State;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create or converge.
    Up,
    /// Compute what `Up` would do; mutate nothing (not even state).
    Plan,
    /// Delete everything, dependents first.
    Down,
}

/// What happened (or would happen) to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// Found by name/tags without a state record and taken over.
    Adopt,
    NoChange,
    Delete,
    /// `down` found nothing to delete.
    Gone,
    /// Dry run: cannot compare until a dependency exists.
    AfterDependencies,
    Failed,
    Skipped,
    Cancelled,
    /// Left out by the stack's options and not there: not reported.
    Absent,
}

#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: String,
    pub kind: &'static str,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time spent on this resource (reads, calls and waits).
    pub seconds: f64,
    /// When work on it started, in seconds since the run began (with
    /// `seconds` and `depends_on`, enough to draw the run's timeline).
    pub started: f64,
    /// Logical ids this resource waited for (the graph, for tools).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

#[derive(Debug)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// When the graph walk began (entries' `started` counts from here).
    pub started_at: std::time::SystemTime,
    pub elapsed: std::time::Duration,
    pub interrupted: bool,
}

impl Report {
    pub fn count(&self, a: Action) -> usize {
        self.entries.iter().filter(|e| e.action == a).count()
    }
    pub fn errors(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e.action,
                    Action::Failed | Action::Skipped | Action::Cancelled
                )
            })
            .collect()
    }
    pub fn has_changes(&self) -> bool {
        self.entries.iter().any(|e| {
            matches!(
                e.action,
                Action::Create
                    | Action::Update
                    | Action::Adopt
                    | Action::Delete
                    | Action::AfterDependencies
            )
        })
    }
}

/// One stack run: resources, their graph, and the state they update.
pub struct Engine {
    resources: Vec<Arc<dyn Resource>>,
    nodes: Vec<Node>,
    state: Arc<Mutex<State>>,
    state_path: PathBuf,
    cx: Cx,
    parallel: usize,
    stop: Arc<AtomicBool>,
}

impl Engine {
    pub fn new(
        resources: Vec<Arc<dyn Resource>>,
        state: State,
        state_path: PathBuf,
        cx: Cx,
        parallel: usize,
        stop: Arc<AtomicBool>,
    ) -> Result<Self> {
        let nodes: Vec<Node> = resources
            .iter()
            .map(|r| Node {
                id: r.id().to_string(),
                deps: r.depends_on(),
            })
            .collect();
        graph::validate(&nodes)?;
        Ok(Self {
            resources,
            nodes,
            state: Arc::new(Mutex::new(state)),
            state_path,
            cx,
            parallel,
            stop,
        })
    }

    pub fn state(&self) -> State {
        lock(&self.state).clone()
    }

    pub async fn run(&self, mode: Mode) -> Report {
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let entries: Arc<Mutex<BTreeMap<String, Entry>>> = Arc::default();
        let by_id: BTreeMap<String, Arc<dyn Resource>> = self
            .resources
            .iter()
            .map(|r| (r.id().to_string(), r.clone()))
            .collect();
        let nodes = if mode == Mode::Down {
            graph::reversed(&self.nodes)
        } else {
            self.nodes.clone()
        };
        let outcomes = graph::run(&nodes, self.parallel, self.stop.clone(), |id| {
            let res = by_id[&id].clone();
            let cx = self.cx.for_resource(&id);
            let state = self.state.clone();
            let path = self.state_path.clone();
            let entries = entries.clone();
            async move {
                let t = Instant::now();
                let result = match mode {
                    Mode::Up => up_one(&*res, &cx, &state, &path).await,
                    Mode::Plan => plan_one(&*res, &cx, &state).await,
                    Mode::Down => down_one(&*res, &cx, &state, &path).await,
                };
                match result {
                    Ok(mut entry) => {
                        entry.seconds = t.elapsed().as_secs_f64();
                        entry.started = t.duration_since(started).as_secs_f64();
                        entry.depends_on = res.depends_on();
                        cx.finish(describe_done(&entry, t.elapsed()));
                        lock(&entries).insert(entry.id.clone(), entry);
                        Ok(())
                    }
                    Err(e) => {
                        cx.finish(format!("failed: {}", first_line(&e)));
                        Err(e)
                    }
                }
            }
        })
        .await;
        let mut done = lock(&entries).clone();
        let mut interrupted = false;
        let mut out = Vec::new();
        // Report in definition order.
        for r in &self.resources {
            let id = r.id();
            let entry = match outcomes.get(id) {
                Some(Outcome::Done) => done.remove(id).filter(|e| e.action != Action::Absent),
                Some(Outcome::Failed(e)) => {
                    Some(failed(r.as_ref(), Action::Failed, format!("{e:#}")))
                }
                Some(Outcome::Skipped(dep)) => Some(failed(
                    r.as_ref(),
                    Action::Skipped,
                    format!("not attempted because {dep} failed"),
                )),
                Some(Outcome::Cancelled) => {
                    interrupted = true;
                    Some(failed(
                        r.as_ref(),
                        Action::Cancelled,
                        "not attempted: the run was interrupted".into(),
                    ))
                }
                None => None,
            };
            if let Some(e) = entry {
                self.cx.for_resource(id).finish_if_pending(&e);
                out.push(e);
            }
        }
        for (id, o) in outcomes {
            if let Outcome::Failed(e) = o {
                if !by_id.contains_key(&id) {
                    out.push(Entry {
                        id,
                        kind: "internal",
                        action: Action::Failed,
                        physical_id: None,
                        drift: vec![],
                        error: Some(format!("{e:#}")),
                        seconds: 0.0,
                        started: 0.0,
                        depends_on: vec![],
                    });
                }
            }
        }
        Report {
            entries: out,
            started_at,
            elapsed: started.elapsed(),
            interrupted,
        }
    }
}

fn failed(r: &dyn Resource, action: Action, msg: String) -> Entry {
    Entry {
        id: r.id().to_string(),
        kind: r.kind(),
        action,
        physical_id: None,
        drift: vec![],
        error: Some(msg),
        seconds: 0.0,
        started: 0.0,
        depends_on: r.depends_on(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn describe_done(e: &Entry, took: std::time::Duration) -> String {
    let t = format!("{:.1}s", took.as_secs_f64());
    let fields = || {
        e.drift
            .iter()
            .map(|d| d.field.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match e.action {
        Action::Create => format!("created ({t})"),
        Action::Update => format!("updated {} ({t})", fields()),
        Action::Adopt => format!("adopted existing ({t})"),
        Action::NoChange => format!("unchanged ({t})"),
        Action::Delete => format!("deleted ({t})"),
        Action::Gone => format!("already gone ({t})"),
        Action::Absent => "not part of the stack with these options".into(),
        Action::AfterDependencies => "known after dependencies exist".into(),
        _ => format!("{:?}", e.action),
    }
}

impl Cx {
    fn finish(&self, msg: String) {
        self.progress_finish(msg);
    }
    fn finish_if_pending(&self, e: &Entry) {
        if matches!(e.action, Action::Skipped | Action::Cancelled) {
            self.progress_finish(e.error.clone().unwrap_or_default());
        }
    }
}

/// Records a resource's new physical id and attributes, and saves the state
/// file when the record changed (a no-op run writes nothing).
fn record(
    state: &Mutex<State>,
    path: &std::path::Path,
    res: &dyn Resource,
    cx: &Cx,
    live: &resource::Live,
) -> Result<()> {
    let applied = res.desired(cx).unwrap_or(serde_json::Value::Null);
    let rec = Record {
        kind: res.kind().to_string(),
        physical_id: live.physical_id.clone(),
        attrs: live.attrs.clone(),
        applied,
        pending: None,
    };
    let mut st = lock(state);
    if st.resources.get(res.id()) == Some(&rec) {
        return Ok(());
    }
    st.resources.insert(res.id().to_string(), rec);
    st.serial += 1;
    state::save(path, &st)
}

/// Writes the intent to create before the call, so a run killed mid-call
/// leaves a trace: the next run finds the object by name/tag and adopts it.
fn mark_pending(
    state: &Mutex<State>,
    path: &std::path::Path,
    res: &dyn Resource,
    op: &str,
) -> Result<()> {
    let mut st = lock(state);
    let rec = st
        .resources
        .entry(res.id().to_string())
        .or_insert_with(|| Record {
            kind: res.kind().to_string(),
            physical_id: String::new(),
            attrs: Default::default(),
            applied: serde_json::Value::Null,
            pending: None,
        });
    rec.pending = Some(op.to_string());
    st.serial += 1;
    state::save(path, &st)
}

async fn up_one(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    path: &std::path::Path,
) -> Result<Entry> {
    let rec = lock(state).resources.get(res.id()).cloned();
    let confirmed = rec.as_ref().and_then(Record::confirmed);
    if !res.wanted() {
        return remove_unwanted(res, cx, state, path, confirmed).await;
    }
    cx.say("reading");
    let found = res.read(cx, confirmed).await?;
    let (live, action, drift) = match found {
        None => {
            cx.say("creating");
            mark_pending(state, path, res, "create")?;
            (res.create(cx).await?, Action::Create, vec![])
        }
        Some(live) if !live.drift.is_empty() => {
            let fields: Vec<&str> = live.drift.iter().map(|d| d.field.as_str()).collect();
            cx.say(format!("updating {}", fields.join(", ")));
            let drift = live.drift.clone();
            (res.update(cx, &live).await?, Action::Update, drift)
        }
        Some(live) if confirmed.is_none() => (live, Action::Adopt, vec![]),
        Some(live) => (live, Action::NoChange, vec![]),
    };
    cx.publish(res.id(), live.attrs.clone());
    record(state, path, res, cx, &live)?;
    Ok(Entry {
        id: res.id().to_string(),
        kind: res.kind(),
        action,
        physical_id: Some(live.physical_id),
        drift,
        error: None,
        seconds: 0.0,
        started: 0.0,
        depends_on: vec![],
    })
}

async fn plan_one(res: &dyn Resource, cx: &Cx, state: &Mutex<State>) -> Result<Entry> {
    let rec = lock(state)
        .resources
        .get(res.id())
        .cloned()
        .filter(|r| r.pending.is_none());
    cx.say("reading");
    let entry = |action, physical_id, drift| Entry {
        id: res.id().to_string(),
        kind: res.kind(),
        action,
        physical_id,
        drift,
        error: None,
        seconds: 0.0,
        started: 0.0,
        depends_on: vec![],
    };
    if !res.wanted() {
        return Ok(match res.read(cx, rec.as_ref()).await? {
            Some(live) => entry(Action::Delete, Some(live.physical_id), vec![]),
            None => entry(Action::Absent, None, vec![]),
        });
    }
    match res.read(cx, rec.as_ref()).await {
        Ok(None) => Ok(entry(Action::Create, None, vec![])),
        Ok(Some(live)) => {
            cx.publish(res.id(), live.attrs.clone());
            let action = if !live.drift.is_empty() {
                Action::Update
            } else if rec.is_none() {
                Action::Adopt
            } else {
                Action::NoChange
            };
            Ok(entry(action, Some(live.physical_id), live.drift))
        }
        Err(e) if e.downcast_ref::<Unknown>().is_some() => Ok(Entry {
            error: Some(format!("{e}")),
            ..entry(
                Action::AfterDependencies,
                rec.map(|r| r.physical_id),
                vec![],
            )
        }),
        Err(e) => Err(e),
    }
}

/// `up` for a resource the stack's options leave out: delete it if it
/// exists (an earlier run with other options created it), forget its record.
async fn remove_unwanted(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    path: &std::path::Path,
    rec: Option<&Record>,
) -> Result<Entry> {
    cx.say("reading");
    let found = res.read(cx, rec).await?;
    let existed = match &found {
        Some(_) => {
            cx.say("deleting (not part of the stack with these options)");
            res.delete(cx, rec).await?
        }
        None => false,
    };
    forget(state, path, res.id())?;
    Ok(Entry {
        id: res.id().to_string(),
        kind: res.kind(),
        action: if existed {
            Action::Delete
        } else {
            Action::Absent
        },
        physical_id: found.map(|l| l.physical_id),
        drift: vec![],
        error: None,
        seconds: 0.0,
        started: 0.0,
        depends_on: vec![],
    })
}

/// Drops a deleted resource's record and saves the state if it had one.
fn forget(state: &Mutex<State>, path: &std::path::Path, id: &str) -> Result<()> {
    let mut st = lock(state);
    if st.resources.remove(id).is_some() {
        st.serial += 1;
        state::save(path, &st)?;
    }
    Ok(())
}

async fn down_one(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    path: &std::path::Path,
) -> Result<Entry> {
    let rec = lock(state).resources.get(res.id()).cloned();
    cx.say("deleting");
    let existed = res
        .delete(cx, rec.as_ref().and_then(Record::confirmed))
        .await?;
    forget(state, path, res.id())?;
    Ok(Entry {
        id: res.id().to_string(),
        kind: res.kind(),
        action: if existed {
            Action::Delete
        } else {
            Action::Gone
        },
        physical_id: rec.map(|r| r.physical_id),
        drift: vec![],
        error: None,
        seconds: 0.0,
        started: 0.0,
        depends_on: vec![],
    })
}
