//! The reconciler: walks the stack's resource graph and, per resource,
//! reads the live object, compares it with the desired spec, and creates,
//! updates, deletes or leaves it.

pub mod context;
pub mod graph;
pub mod progress;
pub mod resource;
pub mod state;

use crate::aws::describe_error;
use anyhow::Result;
use context::{Cx, Unknown};
use graph::{Node, Outcome};
use resource::{Attrs, Live};
use resource::{Drift, Owner, Record, Refused, Resource};
use serde::Serialize;
use state::State;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Create or converge.
    Up,
    /// Compute what `Up` would do; mutate nothing (not even state).
    Plan,
    /// Delete everything, dependents first.
    Down,
}

/// The opening round of reads, started ahead of the walk (possibly before
/// the account lookup has answered); dropped unused, it stops them.
pub struct Reads {
    started: Instant,
    started_at: std::time::SystemTime,
    handles: BTreeMap<String, JoinHandle<Option<Ahead>>>,
}

impl Drop for Reads {
    fn drop(&mut self) {
        for h in self.handles.values() {
            h.abort();
        }
    }
}

/// What happened (or would happen) to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// `down` left it in place: it holds data (`Entry::note` says why).
    Kept,
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
    /// Why it was kept (`Action::Kept`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall time spent on this resource (reads, calls and waits).
    pub seconds: f64,
    /// When work on it started, in seconds since the run began (with
    /// `seconds` and `depends_on`, enough to draw the run's timeline).
    pub started: f64,
    /// When its read was done ahead of the graph (with every other read,
    /// at the start of the run), and how long it took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ahead: Option<Timing>,
    /// Logical ids this resource waited for (the graph, for tools): its
    /// dependencies, and in `down` what is deleted before it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl Entry {
    /// An entry with no drift, error, timings or dependencies yet.
    pub(crate) fn new(
        id: &str,
        kind: &'static str,
        action: Action,
        physical_id: Option<String>,
    ) -> Self {
        Self {
            id: id.to_string(),
            kind,
            action,
            physical_id,
            drift: vec![],
            error: None,
            note: None,
            seconds: 0.0,
            started: 0.0,
            read_ahead: None,
            depends_on: vec![],
        }
    }

    /// What one resource's run did.
    fn of(r: &dyn Resource, action: Action, physical_id: Option<String>) -> Self {
        Self::new(r.id(), r.kind(), action, physical_id)
    }
}

/// How many more reads than changes go at once in the reads that start a
/// run (`--parallel 10`: 40, enough for the whole stack in one round).
pub const READ_AHEAD_FACTOR: usize = 4;

/// A span of a run, in seconds since the run began.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Timing {
    pub started: f64,
    pub seconds: f64,
}

/// A read done ahead of the graph and the attributes it looked up.
struct Ahead {
    found: Option<Live>,
    used: context::Used,
    timing: Timing,
    /// Found by name without a record, and not this stack's to take over.
    refused: Option<String>,
}

#[derive(Debug)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// When the graph walk began (entries' `started` counts from here).
    pub started_at: std::time::SystemTime,
    pub elapsed: std::time::Duration,
    pub interrupted: bool,
    /// `up` stopped at its gate before any change: `Ok` as the gate asked
    /// (a plan saved), `Err` with the reason (not confirmed, plan outdated).
    pub halted: Option<Result<(), String>>,
}

/// Shown what `up` is about to do (its opening reads, as a plan) before the
/// first change: `Ok(true)` goes on, `Ok(false)` stops there, `Err` refuses.
pub type Gate = Arc<dyn Fn(&[Entry]) -> Result<bool> + Send + Sync>;

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
    /// Every resource's dependencies, direct and indirect.
    ancestors: BTreeMap<String, BTreeSet<String>>,
    state: Arc<Mutex<State>>,
    writer: Arc<state::Writer>,
    cx: Cx,
    parallel: usize,
    stop: Arc<AtomicBool>,
    gate: Mutex<Option<Gate>>,
}

/// The dependency graph of a list of resources.
pub fn nodes(resources: &[Arc<dyn Resource>]) -> Vec<Node> {
    resources
        .iter()
        .map(|r| Node {
            id: r.id().to_string(),
            deps: r.depends_on(),
        })
        .collect()
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
        let nodes = nodes(&resources);
        graph::validate(&nodes)?;
        let ancestors = graph::ancestors(&nodes);
        Ok(Self {
            resources,
            nodes,
            ancestors,
            writer: Arc::new(state::Writer::new(state_path, state.serial)),
            state: Arc::new(Mutex::new(state)),
            cx,
            parallel,
            stop,
            gate: Mutex::new(None),
        })
    }

    /// Has `up` show its plan to `gate` before its first change.
    pub fn set_gate(&self, gate: Gate) {
        *lock(&self.gate) = Some(gate);
    }

    pub fn state(&self) -> State {
        lock(&self.state).clone()
    }

    /// Records the stack's settings in the state: saved with the run's
    /// first change (or its last save), not at all when they are unchanged.
    pub fn record_settings(&self, settings: BTreeMap<String, String>) {
        change(&self.state, |st| {
            if st.settings.as_ref() == Some(&settings) {
                return false;
            }
            st.settings = Some(settings);
            true
        });
    }

    /// Starts the reads that open an `up`, `plan` or `status` (none for
    /// `down`). With `--parallel 1` they are done one by one before this
    /// returns; otherwise they run in the background.
    pub async fn start_reads(&self, mode: Mode) -> Reads {
        let started = Instant::now();
        let started_at = std::time::SystemTime::now();
        let handles = match mode {
            Mode::Up | Mode::Plan => self.read_ahead(started).await,
            Mode::Down => BTreeMap::new(),
        };
        Reads {
            started,
            started_at,
            handles,
        }
    }

    /// The whole run: `reads` if they were started already, else they are
    /// started now.
    pub async fn run(&self, mode: Mode, reads: Option<Reads>) -> Report {
        let mut reads = match reads {
            Some(r) => r,
            None => self.start_reads(mode).await,
        };
        let (started, started_at) = (reads.started, reads.started_at);
        // Up changes nothing until every opening read is in: an object that
        // is not this stack's to take over stops the run before its first
        // change, not after others were made.
        if mode == Mode::Up {
            let mut refused = Vec::new();
            let mut seen = BTreeMap::new();
            for (id, h) in std::mem::take(&mut reads.handles) {
                let ahead = h.await.ok().flatten();
                if let Some(a) = &ahead {
                    if let Some(why) = &a.refused {
                        refused.push((id.clone(), why.clone()));
                    }
                    seen.insert(id.clone(), a.found.clone());
                }
                reads
                    .handles
                    .insert(id, tokio::spawn(std::future::ready(ahead)));
            }
            let halt = |entries, halted| Report {
                entries,
                started_at,
                elapsed: started.elapsed(),
                interrupted: false,
                halted,
            };
            if !refused.is_empty() {
                let entries = self
                    .resources
                    .iter()
                    .filter_map(|r| {
                        let (_, why) = refused.iter().find(|(id, _)| id == r.id())?;
                        Some(Entry {
                            error: Some(why.clone()),
                            ..Entry::of(r.as_ref(), Action::Failed, None)
                        })
                    })
                    .collect();
                return halt(entries, None);
            }
            let gate = lock(&self.gate).clone();
            if let Some(gate) = gate {
                let preview = self.preview(&seen);
                match gate(&preview) {
                    Ok(true) => {}
                    Ok(false) => return halt(preview, Some(Ok(()))),
                    Err(e) => return halt(vec![], Some(Err(describe_error(&e)))),
                }
            }
        }
        let entries: Arc<Mutex<BTreeMap<String, Entry>>> = Arc::default();
        let by_id: BTreeMap<String, Arc<dyn Resource>> = self
            .resources
            .iter()
            .map(|r| (r.id().to_string(), r.clone()))
            .collect();
        let (nodes, swept) = if mode == Mode::Down {
            teardown_plan(&self.nodes, &by_id)
        } else {
            (self.nodes.clone(), BTreeMap::new())
        };
        // Down: the physical ids the state file knew of what gets swept
        // (their records go with their container's).
        let swept_ids: BTreeMap<String, String> = {
            let st = lock(&self.state);
            swept
                .keys()
                .filter_map(|id| Some((id.clone(), st.resources.get(id)?.physical_id.clone())))
                .collect()
        };
        let waits: BTreeMap<String, Vec<String>> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.deps.clone()))
            .collect();
        // Every read at once at the start (Up, Plan): a resource whose read
        // saw what its dependencies then publish, and none of whose
        // dependencies changed anything, is not read again when the walk
        // reaches it. A run with nothing to change is then one round of reads.
        let ahead = Mutex::new(std::mem::take(&mut reads.handles));
        let changed: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let created: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let outcomes = graph::run(&nodes, self.parallel, self.stop.clone(), |id| {
            let res = by_id[&id].clone();
            let cx = self.cx.for_resource(&id);
            let state = self.state.clone();
            let path = self.writer.clone();
            let entries = entries.clone();
            let changed = changed.clone();
            let created = created.clone();
            // The dependencies are done: whether any of them changed is known.
            let handle = lock(&ahead).remove(&id);
            // Unless the state file records it: what it records may have
            // outlived its container (a mapping on a deleted table's stream)
            // and is read, to be replaced rather than forgotten.
            let recorded = lock(&self.state)
                .resources
                .get(&id)
                .and_then(Record::confirmed)
                .is_some();
            let container_is_new =
                !recorded && res.inside().is_some_and(|c| lock(&created).contains(c));
            let deps_unchanged = {
                let changed = lock(&changed);
                self.ancestors
                    .get(&id)
                    .is_none_or(|up| up.is_disjoint(&changed))
            };
            let fresh_container = container_is_new && mode != Mode::Down;
            // Down: the container that took this one along is done.
            let container = swept.get(&id).cloned();
            let swept_by = container
                .as_ref()
                .and_then(|c| lock(&entries).get(c).map(|e| e.action.clone()));
            let waited_for = waits.get(&id).cloned().unwrap_or_default();
            let contents: Vec<String> = swept
                .iter()
                .filter(|(_, c)| **c == id)
                .map(|(child, _)| child.clone())
                .collect();
            let known = swept_ids.get(&id).cloned();
            let cx = if fresh_container {
                cx.in_new_container()
            } else {
                cx
            };
            async move {
                // Up created the container, or plan found it missing.
                let pre = match handle {
                    Some(h) if fresh_container => {
                        h.abort();
                        None
                    }
                    Some(h) => h.await.ok().flatten().filter(|a| {
                        cx.saw_published(&a.used)
                            && (a.found.is_none() || mode == Mode::Plan || deps_unchanged)
                    }),
                    None => None,
                };
                let t = Instant::now();
                let timing = pre.as_ref().map(|a| a.timing);
                // Nothing can be inside what this run just created.
                let pre = if fresh_container {
                    Some(None)
                } else {
                    pre.map(|a| a.found)
                };
                let result = match mode {
                    Mode::Up => up_one(&*res, &cx, &state, &path, pre).await,
                    Mode::Plan => plan_one(&*res, &cx, &state, pre).await,
                    Mode::Down => match swept_by {
                        Some(container) => Ok(swept_one(&*res, container, known)),
                        None => down_one(&*res, &cx, &state, &path, &contents).await,
                    },
                };
                match result {
                    Ok(mut entry) => {
                        entry.seconds = t.elapsed().as_secs_f64();
                        entry.started = t.duration_since(started).as_secs_f64();
                        entry.read_ahead = timing;
                        entry.depends_on = waited_for;
                        if entry.action != Action::NoChange {
                            lock(&changed).insert(entry.id.clone());
                        }
                        if entry.action == Action::Create {
                            lock(&created).insert(entry.id.clone());
                        }
                        let done = match (&container, &entry.action) {
                            (Some(c), Action::Delete) => format!("deleted with {c}"),
                            _ => describe_done(&entry, t.elapsed()),
                        };
                        cx.finish(done);
                        lock(&entries).insert(entry.id.clone(), entry);
                        Ok(())
                    }
                    Err(e) => {
                        lock(&changed).insert(id);
                        cx.finish(format!("failed: {}", first_line(&e)));
                        Err(e)
                    }
                }
            }
        })
        .await;
        // Reads of resources the walk never reached (a failure upstream, an
        // interrupt) are not waited for.
        for h in lock(&ahead).values() {
            h.abort();
        }
        // The results not yet carried by a later intent's save.
        let serial = lock(&self.state).serial;
        let saved = self.writer.save(&self.state, serial).await;
        let mut done = lock(&entries).clone();
        let mut interrupted = false;
        let mut out = Vec::new();
        // Report in definition order.
        for r in &self.resources {
            let id = r.id();
            let entry = match outcomes.get(id) {
                Some(Outcome::Done) => done.remove(id).filter(|e| e.action != Action::Absent),
                Some(Outcome::Failed(e)) => Some(failed(
                    r.as_ref(),
                    Action::Failed,
                    describe_error(e),
                    &waits,
                )),
                Some(Outcome::Skipped(dep)) => Some(failed(
                    r.as_ref(),
                    Action::Skipped,
                    format!("not attempted because {dep} failed"),
                    &waits,
                )),
                Some(Outcome::Cancelled) => {
                    interrupted = true;
                    Some(failed(
                        r.as_ref(),
                        Action::Cancelled,
                        "not attempted: the run was interrupted".into(),
                        &waits,
                    ))
                }
                None => None,
            };
            if let Some(e) = entry {
                self.cx.for_resource(id).finish_if_pending(&e);
                out.push(e);
            }
        }
        if let Err(e) = saved {
            out.push(Entry {
                error: Some(format!(
                    "{}; the changes above were made but the state file does not record them all: fix the cause and run the command again (it finds them by name and tags)",
                    describe_error(&e)
                )),
                ..Entry::new("state-file", "internal", Action::Failed, None)
            });
        }
        for (id, o) in outcomes {
            if let Outcome::Failed(e) = o {
                if !by_id.contains_key(&id) {
                    out.push(Entry {
                        error: Some(describe_error(&e)),
                        ..Entry::new(&id, "internal", Action::Failed, None)
                    });
                }
            }
        }
        Report {
            entries: out,
            started_at,
            elapsed: started.elapsed(),
            // A signal that cut waits short, though nothing was left unstarted.
            interrupted: interrupted || self.stop.load(Ordering::SeqCst),
            halted: None,
        }
    }
}

impl Engine {
    /// What `up` will do, as far as its opening reads tell (`seen`: what
    /// each read found): in definition order, like `plan`'s report. What
    /// was not read (it needs a dependency first) is decided after its
    /// dependencies, unless its container is to be created.
    fn preview(&self, seen: &BTreeMap<String, Option<Live>>) -> Vec<Entry> {
        let st = lock(&self.state);
        let mut creates = BTreeSet::new();
        let mut out = Vec::new();
        for r in &self.resources {
            let id = r.id();
            let confirmed = st.resources.get(id).and_then(Record::confirmed);
            let (action, physical, drift) = if !r.wanted() {
                match confirmed {
                    Some(c) => (Action::Delete, Some(c.physical_id.clone()), vec![]),
                    None => continue,
                }
            } else {
                match seen.get(id) {
                    Some(None) => (Action::Create, None, vec![]),
                    Some(Some(live)) => (
                        planned(live, confirmed.is_some()),
                        Some(live.physical_id.clone()),
                        live.drift.clone(),
                    ),
                    None if confirmed.is_none()
                        && r.inside().is_some_and(|c| creates.contains(c)) =>
                    {
                        (Action::Create, None, vec![])
                    }
                    None => (
                        Action::AfterDependencies,
                        confirmed.map(|c| c.physical_id.clone()),
                        vec![],
                    ),
                }
            };
            if action == Action::Create {
                creates.insert(id.to_string());
            }
            out.push(Entry {
                drift,
                ..Entry::of(r.as_ref(), action, physical)
            });
        }
        out
    }

    /// Starts a read of every wanted resource, attributes of dependencies
    /// taken from the state file; each resource's turn in the walk waits
    /// for its own read only. Reads are light (and every run starts with
    /// them), so up to `READ_AHEAD_FACTOR × parallel` go at once;
    /// `--parallel 1` keeps everything one at a time (all reads first).
    /// Reads that fail are simply done again in the walk, where errors count.
    async fn read_ahead(&self, t0: Instant) -> BTreeMap<String, JoinHandle<Option<Ahead>>> {
        let (records, recorded): (BTreeMap<String, Record>, HashMap<String, Attrs>) = {
            let st = lock(&self.state);
            let confirmed = || st.resources.iter().filter(|(_, r)| r.pending.is_none());
            (
                confirmed().map(|(k, r)| (k.clone(), r.clone())).collect(),
                confirmed()
                    .map(|(k, r)| (k.clone(), r.attrs.clone()))
                    .collect(),
            )
        };
        let recorded = Arc::new(recorded);
        let serial = self.parallel <= 1;
        let permits = Arc::new(Semaphore::new(self.parallel.max(1) * READ_AHEAD_FACTOR));
        let mut out = BTreeMap::new();
        // Longest chains first: their creates can start soonest.
        let by_id: HashMap<&str, &Arc<dyn Resource>> =
            self.resources.iter().map(|r| (r.id(), r)).collect();
        let order = graph::priority_order(&self.nodes);
        // Something inside a container that the state file records neither
        // of is looked for in the walk, where a container this run creates
        // (the usual case: a fresh stack) spares the look-up altogether.
        let unrecorded_inside = |r: &Arc<dyn Resource>| {
            !records.contains_key(r.id()) && r.inside().is_some_and(|c| !records.contains_key(c))
        };
        for r in order
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .filter(|r| r.wanted() && !unrecorded_inside(r))
        {
            let id = r.id().to_string();
            let (cx, used) = self.cx.read_ahead(&id, recorded.clone());
            let rec = records.get(r.id()).cloned();
            let any_record = lock(&self.state).resources.contains_key(r.id());
            let r = r.clone();
            let stop = self.stop.clone();
            let permits = permits.clone();
            let read = async move {
                let _permit = permits.acquire_owned().await.ok()?;
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
                let t = Instant::now();
                cx.say("reading");
                let read = r.read(&cx, rec.as_ref()).await;
                let used = std::mem::take(&mut *lock(&used));
                let timing = Timing {
                    started: t.duration_since(t0).as_secs_f64(),
                    seconds: t.elapsed().as_secs_f64(),
                };
                let (found, refused) = match read {
                    Ok(Some(live)) if !any_record => {
                        let refused = claim(&*r, &cx, &live).err().map(|e| e.0);
                        (Some(live), refused)
                    }
                    Ok(found) => (found, None),
                    Err(e) => match e.downcast_ref::<Refused>() {
                        Some(why) if !any_record => (None, Some(why.0.clone())),
                        _ => return None,
                    },
                };
                Some(Ahead {
                    found,
                    used,
                    timing,
                    refused,
                })
            };
            let handle = if serial {
                let done = read.await;
                tokio::spawn(std::future::ready(done))
            } else {
                tokio::spawn(read)
            };
            out.insert(id, handle);
        }
        out
    }
}

/// What the walk waited for before `r` (`waits`: the graph it walked).
fn failed(
    r: &dyn Resource,
    action: Action,
    msg: String,
    waits: &BTreeMap<String, Vec<String>>,
) -> Entry {
    Entry {
        error: Some(msg),
        depends_on: waits.get(r.id()).cloned().unwrap_or_default(),
        ..Entry::of(r, action, None)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn first_line(e: &anyhow::Error) -> String {
    describe_error(e)
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
        Action::Kept => format!("kept: {}", e.note.as_deref().unwrap_or("")),
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

/// Records a resource's new physical id and attributes. Written behind: the
/// next save carries it (a dependent's intent to create, or the run's last
/// save), so a step does not wait for a write of its own. A run killed
/// before that save leaves the intent, and the next run adopts the object.
fn record(state: &Mutex<State>, res: &dyn Resource, cx: &Cx, live: &resource::Live) {
    let applied = res.desired(cx).unwrap_or(serde_json::Value::Null);
    let rec = Record {
        kind: res.kind().to_string(),
        physical_id: live.physical_id.clone(),
        attrs: live.attrs.clone(),
        applied,
        pending: None,
    };
    change(state, |st| {
        if st.resources.get(res.id()) == Some(&rec) {
            return false;
        }
        st.resources.insert(res.id().to_string(), rec);
        true
    });
}

/// Applies `edit` to the state and, when it changed something (returns
/// true), bumps the serial; returns the serial to save, if any.
fn change(state: &Mutex<State>, edit: impl FnOnce(&mut State) -> bool) -> Option<u64> {
    let mut st = lock(state);
    if !edit(&mut st) {
        return None;
    }
    st.serial += 1;
    Some(st.serial)
}

/// Writes the intent to create before the call, so a run killed mid-call
/// leaves a trace: the next run finds the object by name/tag and adopts it.
/// Written ahead: returns once it is on disk.
async fn mark_pending(
    state: &Mutex<State>,
    path: &state::Writer,
    res: &dyn Resource,
    op: &str,
) -> Result<()> {
    let serial = change(state, |st| {
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
        true
    });
    match serial {
        Some(serial) => path.save(state, serial).await,
        None => Ok(()),
    }
}

/// Whether an object found by name without a record may be taken over:
/// it must say it is this stack's (`Resource` reads fill `Live::owner`).
fn claim(res: &dyn Resource, cx: &Cx, live: &Live) -> Result<(), Refused> {
    claim_owner(
        cx,
        &format!("{} {}", res.kind(), live.physical_id),
        &live.owner,
    )
}

/// `claim` for a read that checks ownership itself, before it needs what
/// its dependencies publish (with no state file they are not known yet,
/// and the opening reads must still see a foreign object).
pub fn claim_owner(cx: &Cx, what: &str, owner: &Owner) -> Result<(), Refused> {
    let s = &cx.stack;
    match owner {
        Owner::Unknown => Ok(()),
        Owner::Stack(o) if *o == s.owner(false) || *o == s.owner(true) => Ok(()),
        Owner::Stack(o) => Err(Refused(format!(
            "{what} exists but belongs to stack {o} (its webhook-deploy tags), not {}: up does not take it over; remove or rename it, or use another --suffix",
            s.owner(true)
        ))),
        Owner::Untagged if s.opts.adopt_untagged => Ok(()),
        Owner::Untagged => Err(Refused(format!(
            "{what} exists without a webhook-deploy:stack tag, so it may belong to something else: up does not take it over; pass --adopt-untagged to adopt it, or remove or rename it"
        ))),
    }
}

/// `ahead`: what a read ahead of the graph found, still valid.
async fn up_one(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    path: &state::Writer,
    ahead: Option<Option<Live>>,
) -> Result<Entry> {
    let rec = lock(state).resources.get(res.id()).cloned();
    let confirmed = rec.as_ref().and_then(Record::confirmed);
    if !res.wanted() {
        return remove_unwanted(res, cx, state, path, confirmed).await;
    }
    let found = match ahead {
        Some(found) => found,
        None => {
            cx.say("reading");
            res.read(cx, confirmed).await?
        }
    };
    if let (None, Some(live)) = (&rec, &found) {
        claim(res, cx, live)?;
    }
    let (live, action, drift) = match found {
        None => {
            cx.say("creating");
            mark_pending(state, path, res, "create").await?;
            let live = res.create(cx).await?;
            let action = if live.adopted {
                Action::Adopt
            } else {
                Action::Create
            };
            (live, action, vec![])
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
    record(state, res, cx, &live);
    Ok(Entry {
        drift,
        ..Entry::of(res, action, Some(live.physical_id))
    })
}

/// What `up` would do to an object it found: `recorded`, the state file
/// has a confirmed record of it.
fn planned(live: &Live, recorded: bool) -> Action {
    if !live.drift.is_empty() {
        Action::Update
    } else if !recorded {
        Action::Adopt
    } else {
        Action::NoChange
    }
}

async fn plan_one(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    ahead: Option<Option<Live>>,
) -> Result<Entry> {
    let rec = lock(state)
        .resources
        .get(res.id())
        .cloned()
        .filter(|r| r.pending.is_none());
    cx.say("reading");
    let entry = |action, physical_id, drift| Entry {
        drift,
        ..Entry::of(res, action, physical_id)
    };
    if !res.wanted() {
        return Ok(match res.read(cx, rec.as_ref()).await? {
            Some(live) => entry(Action::Delete, Some(live.physical_id), vec![]),
            None => entry(Action::Absent, None, vec![]),
        });
    }
    let found = match ahead {
        Some(found) => Ok(found),
        None => res.read(cx, rec.as_ref()).await,
    };
    let any_record = lock(state).resources.contains_key(res.id());
    if let (false, Ok(Some(live))) = (any_record, &found) {
        claim(res, cx, live)?;
    }
    match found {
        Ok(None) => Ok(entry(Action::Create, None, vec![])),
        Ok(Some(live)) => {
            cx.publish(res.id(), live.attrs.clone());
            let action = planned(&live, rec.is_some());
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
    path: &state::Writer,
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
    forget(state, path, &[res.id()]).await?;
    let action = if existed {
        Action::Delete
    } else {
        Action::Absent
    };
    Ok(Entry::of(res, action, found.map(|l| l.physical_id)))
}

/// Drops deleted resources' records in one save and returns once it is
/// on disk: `outputs` and `send` read the file, and must not offer what is
/// deleted.
async fn forget(state: &Mutex<State>, path: &state::Writer, ids: &[&str]) -> Result<()> {
    let gone = change(state, |st| {
        let mut any = false;
        for id in ids {
            any |= st.resources.remove(*id).is_some();
        }
        any
    });
    match gone {
        Some(serial) => path.save(state, serial).await,
        None => Ok(()),
    }
}

/// The graph `down` walks and what in it goes with its container. Should
/// sweeping ever make a cycle (something swept needing what needs its
/// container), `down` falls back to deleting everything one by one.
pub fn teardown_plan(
    nodes: &[Node],
    by_id: &BTreeMap<String, Arc<dyn Resource>>,
) -> (Vec<Node>, BTreeMap<String, String>) {
    let swept = swept(by_id);
    let graph = graph::teardown(nodes, &swept);
    if graph::validate(&graph).is_ok() {
        (graph, swept)
    } else {
        (graph::reversed(nodes), BTreeMap::new())
    }
}

/// Down: what a container's deletion takes along ([`Resource::deletes_contents`]),
/// each mapped to the outermost such container it is inside.
fn swept(by_id: &BTreeMap<String, Arc<dyn Resource>>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in by_id.keys() {
        let mut sweeper = None;
        let mut at = by_id.get(id).and_then(|r| r.inside());
        while let Some(c) = at {
            let Some(container) = by_id.get(c) else { break };
            if container.deletes_contents() {
                sweeper = Some(c.to_string());
            }
            at = container.inside();
        }
        if let Some(c) = sweeper {
            out.insert(id.clone(), c);
        }
    }
    out
}

/// Down for what went with its container: no call of its own, and no
/// record left (it went in the container's save). Reported deleted when the
/// container was deleted and the state file knew of it (`known`: its
/// physical id).
fn swept_one(res: &dyn Resource, container: Action, known: Option<String>) -> Entry {
    let action = if container == Action::Delete && known.is_some() {
        Action::Delete
    } else {
        Action::Gone
    };
    Entry::of(res, action, known)
}

/// Deletes one resource and drops its record, and with it the records of
/// `contents`, which its deletion took along (one save: a run stopped
/// right after leaves no record of what is gone).
async fn down_one(
    res: &dyn Resource,
    cx: &Cx,
    state: &Mutex<State>,
    path: &state::Writer,
    contents: &[String],
) -> Result<Entry> {
    let rec = lock(state).resources.get(res.id()).cloned();
    let confirmed = rec.as_ref().and_then(Record::confirmed);
    if let Some(why) = res.keep(cx, confirmed).await? {
        return Ok(Entry {
            note: Some(why),
            ..Entry::of(res, Action::Kept, rec.map(|r| r.physical_id))
        });
    }
    cx.say("deleting");
    let existed = res.delete(cx, confirmed).await?;
    let ids: Vec<&str> = std::iter::once(res.id())
        .chain(contents.iter().map(String::as_str))
        .collect();
    forget(state, path, &ids).await?;
    let action = if existed {
        Action::Delete
    } else {
        Action::Gone
    };
    Ok(Entry::of(res, action, rec.map(|r| r.physical_id)))
}
