//! Interrupted runs, throttling, 5xx and concurrent runs, through the fault
//! injecting proxy: nothing is leaked or duplicated and state stays sound.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::cli::{wait, Env};
use support::inventory::{count_tagged, nothing, one_stack};
use support::proxy::{Matcher, Rule};

const SUFFIX: &str = "rel";

/// Waits until the proxy has seen `k` mutating calls, then SIGKILLs the run.
/// Mutating calls are slowed so the kill lands while later calls are in flight.
fn kill_after_mutating_calls(env: &Env, args: &[&str], k: usize) -> support::cli::Out {
    env.proxy
        .add_rule(Rule::delay(Matcher::mutating(), Duration::from_millis(60)));
    let mut child = env.spawn(args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.proxy.mutating_calls().len() < k {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached {k} mutating calls"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let out = wait(child);
    env.proxy.clear_rules();
    // Calls the run sent before it died still land (the delay rule holds
    // them): the next run starts after they have, as it would on AWS, where
    // a call in flight lands within milliseconds and nobody reruns faster.
    env.proxy.wait_idle(Duration::from_secs(10));
    out
}

/// Sends `signal` (`-INT`, `-TERM`) to the run and waits for it to end.
fn interrupt(env: &Env, child: std::process::Child, signal: &str) -> support::cli::Out {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = wait(child);
    env.proxy.clear_rules();
    out
}

fn assert_state_sound(env: &Env) {
    let text = std::fs::read_to_string(env.state_file()).expect("state file exists");
    let v: Value = serde_json::from_str(&text).expect("state file is valid JSON after a kill");
    assert_eq!(v["version"], 2);
}

fn mutating_calls_of_fresh_up() -> usize {
    let env = Env::start(SUFFIX);
    let out = env.run(&["up"]);
    assert_eq!(out.code, 0, "{out:?}");
    env.proxy.mutating_calls().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_killed_at_any_point_converges_on_the_next_up() {
    let total = mutating_calls_of_fresh_up();
    assert!(total >= 10, "a fresh up made only {total} mutating calls");
    // At least 10 kill points spread over the whole run, first and last included.
    let points: Vec<usize> = (0..10).map(|i| 1 + i * (total - 1) / 9).collect();
    let mut report = Vec::new();
    for k in points {
        let env = Env::start(SUFFIX);
        let killed = kill_after_mutating_calls(&env, &["up"], k);
        assert_ne!(killed.code, 0, "k={k}: the run finished before the kill");
        assert_state_sound(&env);

        env.proxy.clear();
        let up = env.run(&["up"]);
        assert_eq!(up.code, 0, "k={k}: rerun failed: {up:?}");
        let conf = env.sdk().await;
        assert_eq!(
            count_tagged(&conf, SUFFIX).await,
            one_stack(),
            "k={k}: leaked or duplicated"
        );
        let status = env.run(&["status"]);
        assert_eq!(status.code, 0, "k={k}: {status:?}");
        let st: Value =
            serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
        let pending: Vec<_> = st["resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.get("pending").is_some())
            .map(|(id, _)| id.clone())
            .collect();
        assert!(
            pending.is_empty(),
            "k={k}: pending operations left in state: {pending:?}"
        );

        let down = env.run(&["down", "--yes"]);
        assert_eq!(down.code, 0, "k={k}: {down:?}");
        assert_eq!(
            count_tagged(&conf, SUFFIX).await,
            nothing(),
            "k={k}: down left resources"
        );
        report.push(k);
    }
    eprintln!("kill points tried (of {total} mutating calls): {report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn down_killed_part_way_finishes_on_the_next_down() {
    for k in [1, 4, 9] {
        let env = Env::start(SUFFIX);
        assert_eq!(env.run(&["up"]).code, 0);
        env.proxy.clear();
        let killed = kill_after_mutating_calls(&env, &["down", "--yes"], k);
        assert_ne!(killed.code, 0, "k={k}: down finished before the kill");
        assert_state_sound(&env);
        let down = env.run(&["down", "--yes"]);
        assert_eq!(down.code, 0, "k={k}: {down:?}");
        assert_eq!(
            count_tagged(&env.sdk().await, SUFFIX).await,
            nothing(),
            "k={k}"
        );
    }
}

/// Results are written behind (with the next intent, or the run's last
/// save): when that last save fails, the run says so and fails, and the
/// next run finds what the state file missed. An adoption writes no
/// intent, so its record waits for the last save.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_last_save_is_reported_and_the_next_run_recovers() {
    let env = Env::start(SUFFIX);
    assert_eq!(env.run(&["up"]).code, 0);
    let file = env.state_file();
    let mut st: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let forgotten = st["resources"]
        .as_object_mut()
        .unwrap()
        .remove("receiver-logs");
    assert!(forgotten.is_some());
    std::fs::write(&file, serde_json::to_string(&st).unwrap()).unwrap();
    // The state file is read before the account lookup; the lookup is held
    // back while the file is replaced by a directory nothing can rename onto.
    env.proxy.add_rule(Rule::delay(
        Matcher::op("GetCallerIdentity"),
        Duration::from_millis(3000),
    ));
    let child = env.spawn(&["up"]);
    // Margin for a loaded machine: the file is read within milliseconds.
    std::thread::sleep(Duration::from_millis(1200));
    let kept = file.with_extension("kept");
    std::fs::rename(&file, &kept).unwrap();
    std::fs::create_dir(&file).unwrap();
    std::fs::write(file.join("blocker"), "").unwrap();
    let up = wait(child);
    env.proxy.clear_rules();
    assert_eq!(up.code, 1, "{up:?}");
    assert!(up.stderr.contains(", 1 adopted"), "{up:?}");
    assert!(
        up.stderr
            .contains("the state file does not record them all"),
        "{up:?}"
    );

    std::fs::remove_dir_all(&file).unwrap();
    std::fs::rename(&kept, &file).unwrap();
    let again = env.run(&["up"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains(", 1 adopted"), "{again:?}");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(st["resources"]["receiver-logs"].is_object(), "{st}");
    assert_eq!(env.run(&["status"]).code, 0);
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, one_stack());
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_server_errors_do_not_change_the_result() {
    let env = Env::start(SUFFIX);
    // Seeded: 20% of calls throttled (as each service throttles: S3 answers
    // 503 SlowDown, which a HEAD shows by status alone; EC2 says
    // RequestLimitExceeded; API Gateway 429), 5% answered with a 500, 2% of
    // connections reset without an answer.
    let svc = |s: &'static str| Matcher::custom(move |r| r.service == s);
    // Not STS: the account lookup fails fast by design (3 attempts, so a
    // bad credential is reported at once), and at these rates three faults
    // in a row there happen to some seeds.
    let others =
        Matcher::custom(|r| !["s3", "ec2", "apigateway", "sts"].contains(&r.service.as_str()));
    for (m, status, code, seed) in [
        (svc("s3"), 503, "SlowDown", 3),
        (svc("ec2"), 503, "RequestLimitExceeded", 5),
        (svc("apigateway"), 429, "TooManyRequestsException", 13),
        (others, 400, "ThrottlingException", 7),
    ] {
        env.proxy
            .add_rule(Rule::fail(m, 0, status, code, "Rate exceeded").with_probability(0.20, seed));
    }
    env.proxy.add_rule(
        Rule::fail(
            Matcher::any(),
            0,
            500,
            "InternalFailure",
            "injected server error",
        )
        .with_probability(0.05, 11),
    );
    env.proxy
        .add_rule(Rule::reset(Matcher::any()).with_probability(0.02, 17));
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    let resets = env
        .proxy
        .injected_calls()
        .iter()
        .filter(|c| c.status == 502)
        .count();
    assert!(resets > 0, "no connection was reset");
    let injected = env.proxy.injected_calls().len();
    assert!(injected >= 5, "only {injected} faults were injected");
    let conf = env.sdk().await;
    assert_eq!(count_tagged(&conf, SUFFIX).await, one_stack());

    env.proxy.clear();
    let noop = env.run(&["up"]);
    assert_eq!(noop.code, 0, "{noop:?}");
    let forwarded_mutations: Vec<_> = env
        .proxy
        .mutating_calls()
        .into_iter()
        .filter(|c| c.status < 400)
        .collect();
    assert!(
        forwarded_mutations.is_empty(),
        "no-op up under faults mutated: {forwarded_mutations:#?}"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    // What AWS answers while the table is still busy, e.g. being deleted by
    // a run interrupted during its wait: down looks at the table and waits.
    env.proxy.add_rule(Rule::fail(
        "dynamodb:DeleteTable",
        1,
        400,
        "ResourceInUseException",
        "Attempt to change a resource which is still in use: Table is being updated",
    ));
    let down = env.run(&["down", "--yes"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        env.proxy
            .injected_calls()
            .iter()
            .any(|c| c.operation == "DeleteTable" && c.status == 400),
        "DeleteTable was never answered ResourceInUseException"
    );
    assert_eq!(count_tagged(&conf, SUFFIX).await, nothing());
    eprintln!(
        "faults injected over up, no-op up, status and down: {}",
        env.proxy.injected_calls().len()
    );
}

#[test]
fn a_second_concurrent_up_is_refused_naming_the_holder() {
    let env = Env::start(SUFFIX);
    // Slow the first run down so the second starts while it holds the lock.
    env.proxy
        .add_rule(Rule::delay(Matcher::any(), Duration::from_millis(40)));
    let first = env.spawn(&["up"]);
    let lock = env.state_dir().join(format!("{SUFFIX}.lock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = env.run(&["up"]);
    let first = wait(first);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(second.code, 1, "{second:?}");
    assert!(
        second.stderr.contains("locked by pid") && second.stderr.contains("webhook-deploy up"),
        "{second:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_of_a_killed_run_does_not_block_the_next_one() {
    let env = Env::start(SUFFIX);
    let killed = kill_after_mutating_calls(&env, &["up"], 3);
    assert_ne!(killed.code, 0);
    let lock = env.state_dir().join(format!("{SUFFIX}.lock"));
    assert!(
        std::fs::read_to_string(&lock)
            .unwrap()
            .contains("webhook-deploy up"),
        "lock file names the dead holder"
    );
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "the OS released the dead run's lock: {up:?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, one_stack());
}

/// Ctrl-C, and SIGTERM (a CI job cancelled) the same way.
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_new_work_saves_state_and_the_rerun_converges() {
    for signal in ["-INT", "-TERM"] {
        interrupt_then_rerun(signal).await;
    }
}

async fn interrupt_then_rerun(signal: &str) {
    let env = Env::start(SUFFIX);
    env.proxy
        .add_rule(Rule::delay(Matcher::mutating(), Duration::from_millis(150)));
    let child = env.spawn(&["up"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.proxy.mutating_calls().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no progress before the interrupt"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = interrupt(&env, child, signal);
    assert_eq!(out.code, 130, "{signal}: {out:?}");
    let name = format!("interrupted (SIG{})", &signal[1..]);
    assert!(out.stderr.contains(&name), "{out:?}");
    assert_state_sound(&env);
    // Calls in flight finished and the last save recorded them: no
    // resource is left as only an intent.
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    let resources = st["resources"].as_object().unwrap();
    assert!(!resources.is_empty(), "{signal}: nothing recorded: {st}");
    let pending: Vec<&String> = resources
        .iter()
        .filter(|(_, r)| r.get("pending").is_some())
        .map(|(id, _)| id)
        .collect();
    assert!(pending.is_empty(), "{signal}: left as intents: {pending:?}");
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, one_stack());
}

/// `down` stopped while the REST API is being deleted: the call finishes,
/// and the API's route, method, deployment and stage, which went with it,
/// leave the state file in the same save as the API.
#[tokio::test(flavor = "multi_thread")]
async fn down_stopped_during_the_apis_deletion_keeps_no_record_of_its_contents() {
    let env = Env::start(SUFFIX);
    assert_eq!(env.run(&["up", "--no-vpc"]).code, 0);
    // DeleteRestApi: `DELETE /restapis/<id>`, nothing below it.
    let delete_api = |service: &str, op: &str| {
        service == "apigateway"
            && op.starts_with("DELETE /restapis/")
            && op.matches('/').count() == 2
    };
    env.proxy.clear();
    env.proxy.add_rule(Rule::delay(
        Matcher::custom(move |r| delete_api(&r.service, &r.operation)),
        Duration::from_secs(2),
    ));
    let child = env.spawn(&["down", "--yes", "--no-vpc"]);
    // The API goes right after its usage plan.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env
        .proxy
        .calls()
        .iter()
        .any(|c| c.operation.starts_with("DELETE /usageplans/") && !c.operation.contains("/keys/"))
    {
        assert!(Instant::now() < deadline, "the usage plan was not deleted");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = interrupt(&env, child, "-TERM");
    assert_eq!(out.code, 130, "{out:?}");
    let api_deleted = env
        .proxy
        .calls()
        .iter()
        .any(|c| delete_api(&c.service, &c.operation) && c.status < 300);
    assert!(api_deleted, "the API's deletion did not finish: {out:?}");
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    let left: Vec<&str> = [
        "api",
        "api-webhook-resource",
        "api-webhook-post",
        "api-deployment",
        "api-stage",
    ]
    .into_iter()
    .filter(|id| st["resources"].get(*id).is_some())
    .collect();
    assert!(
        left.is_empty(),
        "recorded after the API was deleted: {left:?}"
    );
    let down = env.run(&["down", "--yes", "--no-vpc"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, nothing());
}

/// `down` waiting out Lambda's network interfaces (a DependencyViolation
/// retried for up to --eni-timeout, 45 minutes by default) stops at once on
/// Ctrl-C, keeps what is left in the state file, and the next `down`
/// finishes the job.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_ends_a_long_wait_and_the_next_down_resumes() {
    let env = Env::start(SUFFIX);
    assert_eq!(env.run(&["up"]).code, 0);
    env.proxy.clear();
    env.proxy.add_rule(Rule::fail(
        "ec2:DeleteSubnet",
        usize::MAX,
        400,
        "DependencyViolation",
        "The subnet has dependencies and cannot be deleted.",
    ));
    let child = env.spawn(&["down", "--yes"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env
        .proxy
        .calls()
        .iter()
        .filter(|c| c.operation == "DeleteSubnet")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no retried DeleteSubnet");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let out = interrupt(&env, child, "-INT");
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "the wait held the run for {:?}: {out:?}",
        sent.elapsed()
    );
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    for id in ["subnet-a", "subnet-b", "vpc"] {
        assert!(st["resources"].get(id).is_some(), "{id} forgotten: {st}");
    }
    let down = env.run(&["down", "--yes"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, nothing());
}

/// A second signal does not wait for calls in flight: the run exits at once
/// (130), and the next `up` finds what was started.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_interrupt_exits_at_once() {
    let env = Env::start(SUFFIX);
    // The log groups' creates (in the first wave, nothing before them) take
    // 20 s: after one signal the run would wait that long for them. A log
    // group is found by name, so a create that lands late does no harm.
    env.proxy
        .add_rule(Rule::delay("logs:CreateLogGroup", Duration::from_secs(20)));
    let child = env.spawn(&["up"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.proxy.mutating_calls().len() < 2 {
        assert!(Instant::now() < deadline, "no create finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    let sent = Instant::now();
    kill("-INT");
    std::thread::sleep(Duration::from_millis(300));
    kill("-INT");
    let out = wait(child);
    env.proxy.clear_rules();
    assert_eq!(out.code, 130, "{out:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "exited after {:?}: {out:?}",
        sent.elapsed()
    );
    assert!(out.stderr.contains("interrupted again (SIGINT)"), "{out:?}");
    assert_state_sound(&env);
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, one_stack());
}
