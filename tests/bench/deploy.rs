//! Deploy-speed benchmark (not a test): the real binary against moto through
//! the proxy, with a fixed round-trip latency per call and a larger one for
//! the calls that are slow on AWS. The proxy forwards each call at once and
//! answers it when its latency has passed, or when moto answers if that is
//! later: moto's own service time is part of the round trip, as AWS's is,
//! but moto serving one call at a time still shows when calls queue. So
//! that one service's calls do not queue behind another's (on AWS they are
//! separate fleets), API Gateway, EC2, and Logs + CloudWatch + SNS get a
//! moto each; the same fresh ups with one moto for everything are measured
//! in the same run (`BENCH_EMULATORS=one` swaps the two layouts).
//! `BENCH_LATENCY=added` adds the latency to moto's time instead. Prints, side by side from one run: fresh `up`,
//! no-op `up`, `status`, `down` (wall time, reads, writes), the critical-path
//! lower bound, and `--parallel 1` versus the default.
//!
//! The lower bound uses the latency model itself: each resource weighs the
//! injected delays of its own chain of calls, measured in the `--parallel 1`
//! run (where a resource runs alone, so the calls inside its time window are
//! its own; calls in flight together form one round, a round weighs its
//! slowest call's injected delay). The account lookup (sts) comes first.
//! Emulator queueing, the binary's CPU and any deliberate sleeps are not
//! in the model; the measured per-resource times are printed beside it.
//!
//! Run: `scripts/bench.sh` (or `cargo build && cargo run --example deploy-bench -- [LATENCY_MS SLOW_MS]`).
//! `BENCH_DUMP=<dir>` also writes each run's JSON report and call timeline;
//! the fresh `up` counts as the median of `BENCH_UPS` (default 5) runs.

#[path = "../support/mod.rs"]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::cli::Env;
use support::proxy::{Matcher, Protocol, RequestInfo, Rule, Timed};

/// The latency model: each call's round trip as AWS would give it.
#[derive(Clone, Copy)]
struct Model {
    latency: Duration,
    slow: Duration,
    /// Add the model's latency to the emulator's own service time (the
    /// first benchmarks did) instead of making it the whole round trip.
    added: bool,
}

impl Model {
    fn delay(&self, t: &Timed) -> f64 {
        let method = t
            .call
            .operation
            .split_once(' ')
            .map(|(m, _)| m.to_string())
            .unwrap_or_else(|| "POST".into());
        let info = RequestInfo {
            service: t.call.service.clone(),
            operation: t.call.operation.clone(),
            mutating: t.call.mutating,
            protocol: Protocol::Rest,
            method,
            path_and_query: t.path_and_query.clone(),
        };
        let mut d = self.latency;
        if slow_on_aws(&info) {
            d += self.slow;
        }
        d.as_secs_f64()
    }
}

/// One call, in seconds since the Unix epoch.
struct CallAt {
    start: f64,
    end: f64,
    /// Injected by the model.
    delay: f64,
    service: String,
}

struct Measured {
    wall: f64,
    reads: usize,
    writes: usize,
    cpu: f64,
    entries: Vec<Value>,
    /// When the graph walk began (epoch seconds).
    graph_start: f64,
    calls: Vec<CallAt>,
}

impl Measured {
    /// The calls made inside a time window of the walk (meaningful when
    /// resources ran one at a time: `--parallel 1`).
    fn calls_in(&self, w: &Value) -> Vec<&CallAt> {
        let from = self.graph_start + w["started"].as_f64().unwrap_or(0.0) - 0.002;
        let to = from + w["seconds"].as_f64().unwrap_or(0.0) + 0.004;
        self.calls
            .iter()
            .filter(|c| c.start >= from && c.end <= to)
            .collect()
    }

    /// Rounds of calls in a window (calls in flight together are one round)
    /// and their weight under the model (each round: its slowest call's delay).
    fn rounds_in(&self, w: &Value) -> (usize, f64) {
        let mut calls = self.calls_in(w);
        calls.sort_by(|a, b| a.start.total_cmp(&b.start));
        let (mut n, mut weight) = (0, 0.0);
        let mut round_end = f64::MIN;
        let mut round_delay = 0.0f64;
        for c in calls {
            if c.start >= round_end {
                weight += round_delay;
                n += 1;
                round_delay = 0.0;
                round_end = c.end;
            }
            round_end = round_end.max(c.end);
            round_delay = round_delay.max(c.delay);
        }
        (n, weight + round_delay)
    }

    /// A resource's own work in the walk, and its read done ahead of the
    /// walk (all reads at once at the start), as (rounds, model weight).
    fn rounds(&self, e: &Value) -> ((usize, f64), (usize, f64)) {
        let ahead = if e["read_ahead"].is_object() {
            self.rounds_in(&e["read_ahead"])
        } else {
            (0, 0.0)
        };
        (self.rounds_in(e), ahead)
    }

    /// The account lookup before the graph: measured time and model weight.
    fn sts(&self, model: &Model) -> (f64, f64) {
        self.calls
            .iter()
            .find(|c| c.service == "sts")
            .map(|c| (c.end - c.start, c.delay))
            .unwrap_or((0.0, model.latency.as_secs_f64()))
    }
}

fn child_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// With `BENCH_DUMP=<dir>`, writes each run's JSON report and the proxy's
/// timeline of calls (offsets from the process start) there.
fn dump(name: &str, t0: Instant, timeline: &[Timed], stdout: &str) {
    let Some(dir) = std::env::var_os("BENCH_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.json")), stdout);
    let mut lines = String::new();
    for t in timeline {
        lines.push_str(&format!(
            "{:8.3} {:8.3} {:6.3} {} {} {}\n",
            t.start.duration_since(t0).as_secs_f64(),
            t.end.duration_since(t0).as_secs_f64(),
            t.end.duration_since(t.start).as_secs_f64(),
            t.call.service,
            t.call.operation,
            t.path_and_query
        ));
    }
    let _ = std::fs::write(dir.join(format!("{name}.calls")), lines);
}

fn measure(name: &str, env: &Env, model: &Model, args: &[&str], expect: &[i32]) -> Measured {
    env.proxy.clear();
    let mut full = args.to_vec();
    full.extend(["--output", "json"]);
    let cpu0 = child_cpu_seconds();
    let t = Instant::now();
    let epoch0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let out = env.run(&full);
    let wall = t.elapsed().as_secs_f64();
    let cpu = child_cpu_seconds() - cpu0;
    assert!(expect.contains(&out.code), "{args:?} failed: {out:?}");
    let timeline = env.proxy.timeline();
    dump(name, t, &timeline, &out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let at = |i: Instant| epoch0 + i.duration_since(t).as_secs_f64();
    Measured {
        wall,
        reads: timeline.iter().filter(|c| !c.call.mutating).count(),
        writes: timeline.iter().filter(|c| c.call.mutating).count(),
        cpu,
        entries: v["resources"].as_array().cloned().unwrap_or_default(),
        graph_start: v["started_unix"].as_f64().unwrap_or(epoch0),
        calls: timeline
            .iter()
            .map(|c| CallAt {
                start: at(c.start),
                end: at(c.end),
                delay: model.delay(c),
                service: c.call.service.clone(),
            })
            .collect(),
    }
}

/// Longest dependency chain, each resource weighted by `weight`, after a
/// `root` step every resource waits for (the account lookup).
fn critical_path(
    entries: &[Value],
    weight: &BTreeMap<String, f64>,
    root: (&str, f64),
) -> (f64, Vec<String>) {
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
        root: (&str, f64),
        memo: &mut BTreeMap<String, (f64, Vec<String>)>,
    ) -> (f64, Vec<String>) {
        if let Some(r) = memo.get(id) {
            return r.clone();
        }
        let mut best = (root.1, vec![root.0.to_string()]);
        for d in deps.get(id).into_iter().flatten() {
            let r = finish(d, deps, w, root, memo);
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
        .map(|id| finish(id, &deps, weight, root, &mut memo))
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

/// How the emulator is laid out behind the proxy.
#[derive(Clone, Copy, PartialEq)]
enum Emulators {
    /// One moto per group of services ([`OWN_EMULATOR`]), as AWS gives each
    /// service its own fleet: the default.
    Split,
    /// One moto for every service (`BENCH_EMULATORS=one`): it serves calls
    /// under one interpreter lock, so e.g. EC2's calls queue in front of API
    /// Gateway's, which the latency model does not know.
    One,
}

impl Emulators {
    fn describe(self) -> &'static str {
        match self {
            Emulators::Split => "four emulators (API Gateway; EC2; CloudWatch Logs, CloudWatch and SNS; IAM, Lambda, DynamoDB, S3 and STS)",
            Emulators::One => "one emulator for every service",
        }
    }
    fn other(self) -> Emulators {
        match self {
            Emulators::Split => Emulators::One,
            Emulators::One => Emulators::Split,
        }
    }
}

/// Services with an emulator of their own under [`Emulators::Split`].
/// Lambda stays with IAM, DynamoDB and S3: moto looks roles, streams and
/// code up across those backends (a fifth emulator for S3 measured the same).
const OWN_EMULATOR: [&[&str]; 3] = [&["apigateway"], &["ec2"], &["logs", "monitoring", "sns"]];

/// The deployer's environment (one moto, the proxy, a state directory) and
/// the further emulators the proxy routes to.
struct Bench {
    env: Env,
    _more: Vec<support::moto::Moto>,
}

fn env_with_latency(suffix: &str, model: &Model, emulators: Emulators) -> Bench {
    let env = Env::start(suffix);
    let mut more = vec![];
    if emulators == Emulators::Split {
        for services in OWN_EMULATOR {
            let m = support::moto::Moto::start_own();
            for s in services {
                env.proxy.route(s, &m.endpoint);
            }
            more.push(m);
        }
    }
    // A fresh moto imports each service's code on its first request (seconds
    // per service, under the GIL): warm every code path with a throwaway
    // stack first, so the figures measure the deployer and the latency
    // model, not the emulator's start-up.
    for args in [&["up"][..], &["down", "--yes"]] {
        let mut c = support::deployer(&env.proxy.endpoint(), env.state_dir());
        c.arg("--state-dir")
            .arg(env.state_dir())
            .args(["--suffix", "warmup", "--output", "json"])
            .args(args);
        let out = support::cli::run(c);
        assert_eq!(out.code, 0, "warm-up {args:?} failed: {out:?}");
    }
    let rule = if model.added {
        Rule::delay
    } else {
        Rule::latency
    };
    env.proxy.add_rule(rule(Matcher::any(), model.latency));
    env.proxy
        .add_rule(rule(Matcher::custom(slow_on_aws), model.slow));
    Bench { env, _more: more }
}

/// Fresh ups on a torn-down stack, each followed by a `down`, numbered from
/// `from`: their walls. `down` leaves a state file without resources; it
/// goes first, so that each up is a new stack's (the account lookup before
/// the reads, as the bound has it), not an up over a recorded account.
fn fresh_ups(env: &Env, model: &Model, tag: &str, from: usize, to: usize) -> Vec<f64> {
    (from..to)
        .map(|i| {
            match std::fs::remove_file(env.state_file()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove {}: {e}", env.state_file().display()),
            }
            let wall = measure(&format!("up{tag}{i}"), env, model, &["up"], &[0]).wall;
            measure(
                &format!("down{tag}{i}"),
                env,
                model,
                &["down", "--yes"],
                &[0],
            );
            wall
        })
        .collect()
}

fn median_of(walls: &[f64]) -> String {
    format!(
        "median of {}: {}",
        walls.len(),
        walls
            .iter()
            .map(|w| format!("{w:.2}"))
            .collect::<Vec<_>>()
            .join(" / ")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = Model {
        latency: Duration::from_millis(args.first().and_then(|a| a.parse().ok()).unwrap_or(50)),
        slow: Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000)),
        added: std::env::var("BENCH_LATENCY").is_ok_and(|v| v == "added"),
    };
    println!(
        "latency model: {} ms per call, +{} ms for CreateTable / CreateFunction / function updates / CreateDeployment; {}",
        model.latency.as_millis(),
        model.slow.as_millis(),
        if model.added {
            "added to the emulator's own time (BENCH_LATENCY=added)"
        } else {
            "each the call's whole round trip, the emulator's own time included (a call the emulator takes longer over, e.g. queued behind others, takes longer)"
        }
    );

    // --parallel 1: every resource runs alone, so the calls in its time
    // window are its own chain: the node weights of the lower bound.
    let emulators = match std::env::var("BENCH_EMULATORS").as_deref() {
        Ok("one") => Emulators::One,
        Ok("split") | Err(_) => Emulators::Split,
        Ok(other) => panic!("BENCH_EMULATORS={other}: expected `split` (the default) or `one`"),
    };
    println!("emulators: {}", emulators.describe());
    let bench = env_with_latency("benchs", &model, emulators);
    let serial = &bench.env;
    let p1 = measure("p1", serial, &model, &["up", "--parallel", "1"], &[0]);
    let (sts_measured, sts_model) = p1.sts(&model);
    let mut w_model = BTreeMap::new();
    let mut w_measured = BTreeMap::new();
    // The reads done ahead of the walk run all at once: the slowest one
    // comes before the walk, after the account lookup.
    let (mut ahead_model, mut ahead_measured) = (0.0f64, 0.0f64);
    let mut ahead_sum = (0.0, 0.0);
    for e in &p1.entries {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        let ((_, own), (_, ahead)) = p1.rounds(e);
        let ahead_secs = e["read_ahead"]["seconds"].as_f64().unwrap_or(0.0);
        ahead_model = ahead_model.max(ahead);
        ahead_measured = ahead_measured.max(ahead_secs);
        ahead_sum.0 += ahead;
        ahead_sum.1 += ahead_secs;
        w_model.insert(id.clone(), own);
        w_measured.insert(id, e["seconds"].as_f64().unwrap_or(0.0));
    }
    let root_model = sts_model + ahead_model;
    let root_measured = sts_measured + ahead_measured;
    let (bound, path) = critical_path(&p1.entries, &w_model, ("sts+reads", root_model));
    let (bound_measured, path_measured) =
        critical_path(&p1.entries, &w_measured, ("sts+reads", root_measured));
    let serial_model = sts_model + ahead_sum.0 + w_model.values().sum::<f64>();
    let serial_measured = sts_measured + ahead_sum.1 + w_measured.values().sum::<f64>();
    // The same for `down`: each resource's deletion alone, and the graph
    // the walk used (`depends_on`: what was deleted before it).
    let p1_down = measure(
        "p1-down",
        serial,
        &model,
        &["down", "--yes", "--parallel", "1"],
        &[0],
    );
    let (down_sts_measured, down_sts_model) = p1_down.sts(&model);
    let (mut dw_model, mut dw_measured) = (BTreeMap::new(), BTreeMap::new());
    for e in &p1_down.entries {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        dw_model.insert(id.clone(), p1_down.rounds(e).0 .1);
        dw_measured.insert(id, e["seconds"].as_f64().unwrap_or(0.0));
    }
    let (down_bound, down_path) =
        critical_path(&p1_down.entries, &dw_model, ("sts", down_sts_model));
    let (down_bound_measured, _) =
        critical_path(&p1_down.entries, &dw_measured, ("sts", down_sts_measured));
    drop(bench);

    let bench = env_with_latency("benchp", &model, emulators);
    let env = &bench.env;
    let up = measure("up", env, &model, &["up"], &[0]);
    let noop = measure("noop", env, &model, &["up"], &[0]);
    let status = measure("status", env, &model, &["status"], &[0]);
    // Read rounds per resource: a no-op run one resource at a time.
    let noop1 = measure("noop-p1", env, &model, &["up", "--parallel", "1"], &[0]);
    let down = measure("down", env, &model, &["down", "--yes"], &[0]);
    // One fresh up is at the mercy of the machine (an fsync stuck behind
    // writeback, the emulator's garbage collector): more fresh ups, each
    // after a down, and the median counts. `BENCH_UPS` sets how many.
    let ups: usize = std::env::var("BENCH_UPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut up_walls = vec![up.wall];
    up_walls.extend(fresh_ups(env, &model, "", 1, ups));
    up_walls.sort_by(f64::total_cmp);
    let up_median = up_walls[up_walls.len() / 2];
    let spread = median_of(&up_walls);
    drop(bench);
    // The same fresh ups, no-op up and status with the emulators laid out
    // the other way, in this run: what the layout itself costs.
    let other = emulators.other();
    let bench = env_with_latency("bencho", &model, other);
    let env = &bench.env;
    let mut other_walls = fresh_ups(env, &model, "o", 0, ups);
    other_walls.sort_by(f64::total_cmp);
    let other_median = other_walls[other_walls.len() / 2];
    measure("upo", env, &model, &["up"], &[0]);
    let other_noop = measure("noopo", env, &model, &["up"], &[0]);
    let other_status = measure("statuso", env, &model, &["status"], &[0]);
    let other_down = measure("downo", env, &model, &["down", "--yes"], &[0]);
    drop(bench);
    let resources = up.entries.len();
    // A no-op resource's time: its read (ahead of the walk) plus its turn
    // in the walk.
    let slowest_read = |m: &Measured| {
        m.entries
            .iter()
            .map(|e| {
                e["seconds"].as_f64().unwrap_or(0.0)
                    + e["read_ahead"]["seconds"].as_f64().unwrap_or(0.0)
            })
            .fold(0.0, f64::max)
    };
    let mut rounds: Vec<(String, usize, f64)> = noop1
        .entries
        .iter()
        .map(|e| {
            let ((n1, w1), (n2, w2)) = noop1.rounds(e);
            (
                e["id"].as_str().unwrap_or_default().to_string(),
                n1 + n2,
                w1 + w2,
            )
        })
        .collect();
    rounds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max_rounds = rounds.first().map(|r| r.1).unwrap_or(0);
    let slowest_read_model = rounds.iter().map(|r| r.2).fold(0.0, f64::max);
    let (noop_sts, _) = noop.sts(&model);

    println!();
    println!("| run | wall (s) | reads | writes | CPU (s) | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    println!(
        "| fresh up, --parallel 1 | {:.2} | {} | {} | {:.2} | {:.2} × default's median (at most {:.2} ×: serial work / critical path, latency model) |",
        p1.wall,
        p1.reads,
        p1.writes,
        p1.cpu,
        p1.wall / up_median,
        serial_model / bound
    );
    println!("| fresh up (default --parallel 10) | {:.2} | {} | {} | {:.2} | {:.2} × critical path ({:.2} s, latency model); {:.2} × measured critical path ({:.2} s); {spread} s (reads, writes, CPU: the first) |", up_median, up.reads, up.writes, up.cpu, up_median / bound, bound, up_median / bound_measured, bound_measured);
    println!("| no-op up | {:.2} | {} | {} | {:.2} | {:.2} × slowest resource read ({:.2} s); {:.1} reads/resource, at most {} round(s) each |", noop.wall, noop.reads, noop.writes, noop.cpu, noop.wall / slowest_read(&noop), slowest_read(&noop), noop.reads as f64 / resources as f64, max_rounds);
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
        "| no-op up, --parallel 1 | {:.2} | {} | {} | {:.2} | |",
        noop1.wall, noop1.reads, noop1.writes, noop1.cpu
    );
    println!(
        "| down | {:.2} | {} | {} | {:.2} | {:.2} × critical path ({:.2} s, latency model); {:.2} × measured critical path ({:.2} s) |",
        down.wall,
        down.reads,
        down.writes,
        down.cpu,
        down.wall / down_bound,
        down_bound,
        down.wall / down_bound_measured,
        down_bound_measured
    );
    println!(
        "| down, --parallel 1 | {:.2} | {} | {} | {:.2} | {:.2} × default |",
        p1_down.wall,
        p1_down.reads,
        p1_down.writes,
        p1_down.cpu,
        p1_down.wall / down.wall
    );
    println!(
        "| fresh up, {} | {:.2} | | | | {:.2} × critical path; {} s |",
        other.describe(),
        other_median,
        other_median / bound,
        median_of(&other_walls)
    );
    println!(
        "| no-op up / status / down, {} | {:.2} / {:.2} / {:.2} | | | | {:.2} × / {:.2} × / {:.2} × the rows above |",
        other.describe(),
        other_noop.wall,
        other_status.wall,
        other_down.wall,
        other_noop.wall / noop.wall,
        other_status.wall / status.wall,
        other_down.wall / down.wall,
    );
    println!();
    println!("resources: {resources}");
    println!(
        "critical path, latency model ({bound:.2} s): {}",
        path.join(" → ")
    );
    println!(
        "critical path, measured per resource in the --parallel 1 run ({bound_measured:.2} s): {}",
        path_measured.join(" → ")
    );
    println!(
        "down's critical path, latency model ({down_bound:.2} s): {}",
        down_path.join(" → ")
    );
    println!(
        "serial work (sum over resources, sts included): {serial_model:.2} s latency model, {serial_measured:.2} s measured; so --parallel can gain at most {:.2} × (model) / {:.2} × (measured)",
        serial_model / bound,
        serial_measured / bound_measured
    );
    println!(
        "no-op read chains (latency model, from the --parallel 1 no-op): slowest {slowest_read_model:.2} s; no-op up wall = {:.2} × that; the account lookup (beside the reads) took {noop_sts:.2} s",
        noop.wall / slowest_read_model.max(f64::EPSILON)
    );
    let multi: Vec<String> = rounds
        .iter()
        .filter(|r| r.1 > 1)
        .map(|r| format!("{} ({})", r.0, r.1))
        .collect();
    if !multi.is_empty() {
        println!(
            "resources with more than one round of reads: {}",
            multi.join(", ")
        );
    }
}
