//! Deploy-speed benchmark (not a test): the real binary against moto through
//! the proxy, with a fixed latency injected per call and a larger one for the
//! calls that are slow on AWS. Prints, side by side from one run: fresh `up`,
//! no-op `up`, `status`, `down` (wall time, reads, writes), the critical-path
//! lower bound, and `--parallel 1` versus the default.
//!
//! Run: `scripts/bench.sh` (or `cargo build && cargo run --example deploy-bench -- [LATENCY_MS SLOW_MS]`).

#[path = "../support/mod.rs"]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::cli::Env;
use support::proxy::{Matcher, RequestInfo, Rule};

struct Measured {
    wall: f64,
    reads: usize,
    writes: usize,
    cpu: f64,
    entries: Vec<Value>,
}

fn child_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn measure(env: &Env, args: &[&str], expect: &[i32]) -> Measured {
    env.proxy.clear();
    let mut full = args.to_vec();
    full.extend(["--output", "json"]);
    let cpu0 = child_cpu_seconds();
    let t = Instant::now();
    let out = env.run(&full);
    let wall = t.elapsed().as_secs_f64();
    let cpu = child_cpu_seconds() - cpu0;
    assert!(expect.contains(&out.code), "{args:?} failed: {out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let calls = env.proxy.calls();
    Measured {
        wall,
        reads: calls.iter().filter(|c| !c.mutating).count(),
        writes: calls.iter().filter(|c| c.mutating).count(),
        cpu,
        entries: v["resources"].as_array().cloned().unwrap_or_default(),
    }
}

/// Longest dependency chain, each resource weighted by `weight`.
fn critical_path(entries: &[Value], weight: &BTreeMap<String, f64>) -> (f64, Vec<String>) {
    let deps: BTreeMap<String, Vec<String>> = entries
        .iter()
        .map(|e| {
            let d = e["depends_on"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (e["id"].as_str().unwrap_or_default().to_string(), d)
        })
        .collect();
    fn finish(
        id: &str,
        deps: &BTreeMap<String, Vec<String>>,
        w: &BTreeMap<String, f64>,
        memo: &mut BTreeMap<String, (f64, Vec<String>)>,
    ) -> (f64, Vec<String>) {
        if let Some(r) = memo.get(id) {
            return r.clone();
        }
        let mut best = (0.0, vec![]);
        for d in deps.get(id).into_iter().flatten() {
            let r = finish(d, deps, w, memo);
            if r.0 > best.0 {
                best = r;
            }
        }
        best.0 += w.get(id).copied().unwrap_or(0.0);
        best.1.push(id.to_string());
        memo.insert(id.to_string(), best.clone());
        best
    }
    let mut memo = BTreeMap::new();
    deps.keys()
        .map(|id| finish(id, &deps, weight, &mut memo))
        .fold((0.0, vec![]), |a, b| if b.0 > a.0 { b } else { a })
}

fn slow_on_aws(r: &RequestInfo) -> bool {
    let p = r.path_and_query.as_str();
    (r.service == "dynamodb" && r.operation == "CreateTable")
        || (r.service == "lambda"
            && r.method == "POST"
            && p.trim_end_matches('/').ends_with("/functions"))
        || (r.service == "lambda"
            && r.method == "PUT"
            && (p.contains("/code") || p.contains("/configuration")))
        || (r.service == "apigateway" && r.method == "POST" && p.contains("/deployments"))
}

fn env_with_latency(suffix: &str, latency: Duration, slow: Duration) -> Env {
    let env = Env::start(suffix);
    env.proxy.add_rule(Rule::delay(Matcher::any(), latency));
    env.proxy
        .add_rule(Rule::delay(Matcher::custom(slow_on_aws), slow));
    env
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let latency = Duration::from_millis(args.first().and_then(|a| a.parse().ok()).unwrap_or(50));
    let slow = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000));
    println!("latency model: {} ms per call, +{} ms for CreateTable / CreateFunction / function updates / CreateDeployment", latency.as_millis(), slow.as_millis());

    // --parallel 1: every resource runs alone, so its time is its own chain
    // of calls under the latency model: the node weights of the lower bound.
    let serial = env_with_latency("benchs", latency, slow);
    let p1 = measure(&serial, &["up", "--parallel", "1"], &[0]);
    let weight: BTreeMap<String, f64> = p1
        .entries
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_string(),
                e["seconds"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let (bound, path) = critical_path(&p1.entries, &weight);
    drop(serial);

    let env = env_with_latency("benchp", latency, slow);
    let up = measure(&env, &["up"], &[0]);
    let noop = measure(&env, &["up"], &[0]);
    let status = measure(&env, &["status"], &[0]);
    let down = measure(&env, &["down", "--yes"], &[0]);
    let resources = up.entries.len();
    let slowest_read = |m: &Measured| {
        m.entries
            .iter()
            .filter_map(|e| e["seconds"].as_f64())
            .fold(0.0, f64::max)
    };

    println!();
    println!("| run | wall (s) | reads | writes | CPU (s) | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| fresh up, --parallel 1 | {:.2} | {} | {} | {:.2} | {:.2} × default |",
        p1.wall,
        p1.reads,
        p1.writes,
        p1.cpu,
        p1.wall / up.wall
    );
    println!("| fresh up (default --parallel 10) | {:.2} | {} | {} | {:.2} | {:.2} × critical path ({:.2} s) |", up.wall, up.reads, up.writes, up.cpu, up.wall / bound, bound);
    println!("| no-op up | {:.2} | {} | {} | {:.2} | {:.2} × slowest resource read ({:.2} s); {:.1} reads/resource |", noop.wall, noop.reads, noop.writes, noop.cpu, noop.wall / slowest_read(&noop), slowest_read(&noop), noop.reads as f64 / resources as f64);
    println!(
        "| status | {:.2} | {} | {} | {:.2} | {:.2} × slowest resource read ({:.2} s) |",
        status.wall,
        status.reads,
        status.writes,
        status.cpu,
        status.wall / slowest_read(&status),
        slowest_read(&status)
    );
    println!(
        "| down | {:.2} | {} | {} | {:.2} | |",
        down.wall, down.reads, down.writes, down.cpu
    );
    println!();
    println!(
        "resources: {resources}; critical path: {}",
        path.join(" → ")
    );
}
