//! Dependency-ordered concurrent scheduling.
//!
//! Each node starts as soon as all its dependencies have finished, with at
//! most `parallel` nodes in flight. A failed node skips everything that
//! depends on it, transitively; unrelated nodes keep going.

use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;

#[derive(Clone, Debug)]
pub struct Node {
    pub id: String,
    pub deps: Vec<String>,
}

#[derive(Debug)]
pub enum Outcome {
    Done,
    Failed(anyhow::Error),
    /// Not run because a dependency failed or was skipped (named here).
    Skipped(String),
    /// Not run because the run was interrupted.
    Cancelled,
}

/// Checks that every dependency exists and there is no cycle.
pub fn validate(nodes: &[Node]) -> Result<()> {
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    if ids.len() != nodes.len() {
        bail!("duplicate resource id in the stack definition");
    }
    for n in nodes {
        for d in &n.deps {
            if !ids.contains(d.as_str()) {
                bail!("resource {} depends on unknown resource {}", n.id, d);
            }
        }
    }
    let order = topo_order(nodes);
    if order.len() != nodes.len() {
        bail!("the stack definition has a dependency cycle");
    }
    Ok(())
}

/// Kahn's order; shorter than the input when there is a cycle.
pub fn topo_order(nodes: &[Node]) -> Vec<String> {
    let mut indeg: BTreeMap<&str, usize> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.deps.len()))
        .collect();
    let mut queue: VecDeque<&str> = nodes
        .iter()
        .filter(|n| n.deps.is_empty())
        .map(|n| n.id.as_str())
        .collect();
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        out.push(id.to_string());
        for n in nodes.iter().filter(|n| n.deps.iter().any(|d| d == id)) {
            let e = indeg.entry(n.id.as_str()).or_default();
            *e -= 1;
            if *e == 0 {
                queue.push_back(n.id.as_str());
            }
        }
    }
    out
}

/// Every node's dependencies, direct and indirect (the graph is acyclic).
pub fn ancestors(nodes: &[Node]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for id in topo_order(nodes) {
        let mut all = BTreeSet::new();
        if let Some(n) = nodes.iter().find(|n| n.id == id) {
            for d in &n.deps {
                all.insert(d.clone());
                if let Some(up) = out.get(d) {
                    all.extend(up.iter().cloned());
                }
            }
        }
        out.insert(id, all);
    }
    out
}

/// Each node's height: the number of nodes on the longest chain of
/// dependents that starts at it (1 for a node nothing depends on). A node
/// with a long chain behind it holds the run up most if it starts late.
pub fn heights(nodes: &[Node]) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for id in topo_order(nodes).into_iter().rev() {
        let below = nodes
            .iter()
            .filter(|n| n.deps.contains(&id))
            .filter_map(|n| out.get(&n.id))
            .max()
            .copied()
            .unwrap_or(0);
        out.insert(id, below + 1);
    }
    out
}

/// Node ids, the longest chains first, then in definition order.
pub fn priority_order(nodes: &[Node]) -> Vec<String> {
    let h = heights(nodes);
    let mut ids: Vec<(usize, usize, &str)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (h.get(&n.id).copied().unwrap_or(0), i, n.id.as_str()))
        .collect();
    ids.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ids.into_iter().map(|(_, _, id)| id.to_string()).collect()
}

/// The same graph with every edge reversed (for deletion).
pub fn reversed(nodes: &[Node]) -> Vec<Node> {
    nodes
        .iter()
        .map(|n| Node {
            id: n.id.clone(),
            deps: nodes
                .iter()
                .filter(|m| m.deps.contains(&n.id))
                .map(|m| m.id.clone())
                .collect(),
        })
        .collect()
}

/// The graph `down` walks: every edge reversed (dependents are deleted
/// first), except for what `swept` maps to the container whose deletion
/// takes it along. Such a container waits for everything its contents
/// wait for, and the contents wait only for the container.
pub fn teardown(nodes: &[Node], swept: &BTreeMap<String, String>) -> Vec<Node> {
    let mut rev = reversed(nodes);
    let waits: BTreeMap<String, Vec<String>> =
        rev.iter().map(|n| (n.id.clone(), n.deps.clone())).collect();
    for n in &mut rev {
        if let Some(container) = swept.get(&n.id) {
            n.deps = vec![container.clone()];
            continue;
        }
        let contents: Vec<&String> = swept
            .iter()
            .filter(|(_, c)| **c == n.id)
            .map(|(id, _)| id)
            .collect();
        for id in contents {
            for d in waits.get(id).into_iter().flatten() {
                let inside = swept.get(d) == Some(&n.id);
                if *d != n.id && !inside && !n.deps.contains(d) {
                    n.deps.push(d.clone());
                }
            }
        }
        n.deps.retain(|d| swept.get(d) != Some(&n.id));
    }
    rev
}

/// Runs `work` for every node in dependency order. When `stop` becomes true,
/// nothing new starts; in-flight work finishes.
pub async fn run<F, Fut>(
    nodes: &[Node],
    parallel: usize,
    stop: Arc<AtomicBool>,
    work: F,
) -> BTreeMap<String, Outcome>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let parallel = parallel.max(1);
    let mut waiting: BTreeMap<String, BTreeSet<String>> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.deps.iter().cloned().collect()))
        .collect();
    let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
    // Of the ready nodes, the one with the longest chain behind it starts
    // first (ties in definition order, so runs are predictable): with more
    // ready than `parallel`, the critical path is not kept waiting.
    let order = priority_order(nodes);
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut ready: VecDeque<String> = VecDeque::new();
    let take_ready = |waiting: &mut BTreeMap<String, BTreeSet<String>>,
                      ready: &mut VecDeque<String>| {
        let before = ready.len();
        for id in &order {
            if waiting.get(id).is_some_and(|d| d.is_empty()) {
                waiting.remove(id);
                ready.push_back(id.clone());
            }
        }
        if ready.len() > before {
            ready
                .make_contiguous()
                .sort_by_key(|id| rank.get(id.as_str()).copied().unwrap_or(usize::MAX));
        }
    };
    take_ready(&mut waiting, &mut ready);
    let mut inflight = JoinSet::new();
    loop {
        while inflight.len() < parallel && !stop.load(Ordering::SeqCst) {
            let Some(id) = ready.pop_front() else { break };
            let fut = work(id.clone());
            inflight.spawn(async move { (id, fut.await) });
        }
        let Some(joined) = inflight.join_next().await else {
            break;
        };
        let (id, res) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                // A panicking task cannot name itself; report it and stop scheduling.
                results.insert(
                    format!("<task {}>", e.id()),
                    Outcome::Failed(anyhow::anyhow!("internal error: {e}")),
                );
                stop.store(true, Ordering::SeqCst);
                continue;
            }
        };
        match res {
            Ok(()) => {
                for deps in waiting.values_mut() {
                    deps.remove(&id);
                }
                results.insert(id, Outcome::Done);
                take_ready(&mut waiting, &mut ready);
            }
            Err(e) => {
                results.insert(id.clone(), Outcome::Failed(e));
                skip_dependents(&id, &mut waiting, &mut results);
            }
        }
    }
    for id in ready.into_iter().chain(waiting.into_keys()) {
        results.entry(id).or_insert(Outcome::Cancelled);
    }
    results
}

fn skip_dependents(
    failed: &str,
    waiting: &mut BTreeMap<String, BTreeSet<String>>,
    results: &mut BTreeMap<String, Outcome>,
) {
    let mut frontier = vec![failed.to_string()];
    while let Some(f) = frontier.pop() {
        let hit: Vec<String> = waiting
            .iter()
            .filter(|(_, deps)| deps.contains(&f))
            .map(|(id, _)| id.clone())
            .collect();
        for id in hit {
            waiting.remove(&id);
            results.insert(id.clone(), Outcome::Skipped(f.clone()));
            frontier.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use std::time::Duration;

    fn node(id: &str, deps: &[&str]) -> Node {
        Node {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn diamond() -> Vec<Node> {
        vec![
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("d", &["b", "c"]),
            node("e", &[]),
        ]
    }

    #[test]
    fn teardown_deletes_a_sweeping_container_before_its_contents() {
        // api contains route, route contains method, stage contains nothing
        // but a plan outside depends on it; perm outside depends on api.
        let nodes = vec![
            node("fn", &[]),
            node("api", &[]),
            node("route", &["api"]),
            node("method", &["route", "fn"]),
            node("stage", &["method"]),
            node("plan", &["stage"]),
            node("perm", &["api", "fn"]),
        ];
        let swept: BTreeMap<String, String> =
            [("route", "api"), ("method", "api"), ("stage", "api")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let g = teardown(&nodes, &swept);
        validate(&g).unwrap();
        let deps = |id: &str| {
            let mut d = g.iter().find(|n| n.id == id).unwrap().deps.clone();
            d.sort();
            d
        };
        // The container waits for what depends on it or on its contents.
        assert_eq!(deps("api"), vec!["perm", "plan"]);
        // Its contents go with it.
        assert_eq!(deps("route"), vec!["api"]);
        assert_eq!(deps("method"), vec!["api"]);
        assert_eq!(deps("stage"), vec!["api"]);
        // What the contents need outlives the container.
        assert_eq!(deps("fn"), vec!["method", "perm"]);
        // Without sweeping it is the reversed graph.
        let plain = teardown(&nodes, &BTreeMap::new());
        for (a, b) in plain.iter().zip(reversed(&nodes)) {
            assert_eq!((&a.id, &a.deps), (&b.id, &b.deps));
        }
    }

    #[test]
    fn ancestors_are_transitive() {
        let a = ancestors(&diamond());
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(a["d"], set(&["a", "b", "c"]));
        assert_eq!(a["b"], set(&["a"]));
        assert!(a["e"].is_empty());
    }

    #[tokio::test]
    async fn runs_in_dependency_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let res = run(&diamond(), 4, Arc::default(), move |id| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push(format!("start {id}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                l.lock().unwrap().push(format!("end {id}"));
                Ok(())
            }
        })
        .await;
        assert!(res.values().all(|o| matches!(o, Outcome::Done)));
        let log = log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
        assert!(pos("end a") < pos("start b"));
        assert!(pos("end a") < pos("start c"));
        assert!(pos("end b") < pos("start d"));
        assert!(pos("end c") < pos("start d"));
        // Independent roots start together, b and c run concurrently.
        assert!(pos("start e") < pos("end a"));
        assert!(pos("start c") < pos("end b"));
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let nodes: Vec<Node> = (0..12).map(|i| node(&format!("n{i}"), &[])).collect();
        for limit in [1usize, 3, 5] {
            let now = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (n2, p2) = (now.clone(), peak.clone());
            run(&nodes, limit, Arc::default(), move |_| {
                let (now, peak) = (n2.clone(), p2.clone());
                async move {
                    let c = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(c, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .await;
            assert_eq!(peak.load(Ordering::SeqCst), limit, "limit {limit}");
        }
    }

    #[tokio::test]
    async fn failure_skips_only_dependents() {
        let ran = Arc::new(Mutex::new(BTreeSet::new()));
        let r = ran.clone();
        let res = run(&diamond(), 2, Arc::default(), move |id| {
            let r = r.clone();
            async move {
                r.lock().unwrap().insert(id.clone());
                if id == "b" {
                    anyhow::bail!("boom");
                }
                Ok(())
            }
        })
        .await;
        assert!(matches!(res["a"], Outcome::Done));
        assert!(matches!(res["b"], Outcome::Failed(_)));
        assert!(matches!(res["c"], Outcome::Done));
        assert!(matches!(&res["d"], Outcome::Skipped(by) if by == "b"));
        assert!(matches!(res["e"], Outcome::Done));
        assert!(!ran.lock().unwrap().contains("d"));
    }

    #[tokio::test]
    async fn stop_prevents_new_work() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let res = run(&diamond(), 1, stop, move |id| {
            let s = s.clone();
            async move {
                if id == "a" {
                    s.store(true, Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .await;
        assert!(matches!(res["a"], Outcome::Done));
        assert!(["b", "c", "d", "e"]
            .iter()
            .all(|k| matches!(res[*k], Outcome::Cancelled)));
    }

    #[tokio::test]
    async fn the_longest_chain_starts_first_when_too_many_are_ready() {
        // Three short roots defined first, then the head of a long chain.
        let nodes = vec![
            node("s1", &[]),
            node("s2", &[]),
            node("s3", &[]),
            node("head", &[]),
            node("mid", &["head"]),
            node("tail", &["mid"]),
        ];
        assert_eq!(heights(&nodes)["head"], 3);
        assert_eq!(heights(&nodes)["s1"], 1);
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let out = run(&nodes, 1, Arc::new(AtomicBool::new(false)), move |id| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push(id);
                Ok(())
            }
        })
        .await;
        assert!(out.values().all(|o| matches!(o, Outcome::Done)));
        // Serially: the chain's head and middle beat the short roots; its
        // last link ties with them and keeps its place in definition order.
        assert_eq!(
            *log.lock().unwrap(),
            ["head", "mid", "s1", "s2", "s3", "tail"].map(String::from)
        );
    }

    #[test]
    fn validate_rejects_unknown_deps_and_cycles() {
        assert!(validate(&diamond()).is_ok());
        assert!(validate(&[node("a", &["zz"])]).is_err());
        assert!(validate(&[node("a", &["b"]), node("b", &["a"])]).is_err());
    }

    #[test]
    fn reversed_graph_deletes_dependents_first() {
        let order = topo_order(&reversed(&diamond()));
        let pos = |s: &str| order.iter().position(|x| x == s).unwrap();
        assert!(pos("d") < pos("b") && pos("b") < pos("a") && pos("c") < pos("a"));
    }
}
