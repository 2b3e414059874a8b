//! Settings that stay and data that survives `down`, against moto through
//! the recording proxy: a bare `up` after a flagged one changes nothing,
//! even with the state file gone; `down` keeps a table or bucket that holds
//! data until `--delete-data`.

mod support;

use serde_json::Value;
use support::cli::Env;
use support::inventory::{count_tagged, nothing, one_stack_with};

const TABLE: &str = "webhook-events-s1";
const BUCKET: &str = "webhook-archive-s1-123456789012-us-east-1";
const RECEIVER: &str = "webhook-receiver-s1";
const RECEIVER_S5: &str = "webhook-receiver-s5";

/// The flags of the issue's operator, without the network (faster, and
/// `--no-vpc` is a setting too).
const FLAGS: &[&str] = &[
    "--no-vpc",
    "--no-api-key",
    "--signature",
    "stripe",
    "--alarm-email",
    "oncall@example.com",
    "--memory",
    "processor=1024",
    "--throttle-rate",
    "500",
];

fn json(out: &support::cli::Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn setting<'a>(doc: &'a Value, key: &str) -> &'a Value {
    doc["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no setting {key}: {doc:#}"))
}

/// What the deployed stack says of the settings, read with the SDK.
async fn deployed(env: &Env) -> (Option<i32>, String, Vec<String>) {
    let conf = env.sdk().await;
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let processor = lambda
        .get_function_configuration()
        .function_name("event-processor-s1")
        .send()
        .await
        .unwrap();
    let receiver = lambda
        .get_function_configuration()
        .function_name(RECEIVER)
        .send()
        .await
        .unwrap();
    let scheme = receiver
        .environment()
        .and_then(|e| e.variables())
        .and_then(|v| v.get("SIGNATURE_SCHEME"))
        .cloned()
        .unwrap_or_default();
    let sns = aws_sdk_sns::Client::new(&conf);
    let mut emails = Vec::new();
    for t in sns.list_topics().send().await.unwrap().topics() {
        let subs = sns
            .list_subscriptions_by_topic()
            .topic_arn(t.topic_arn().unwrap())
            .send()
            .await
            .unwrap();
        emails.extend(
            subs.subscriptions()
                .iter()
                .filter(|s| s.protocol() == Some("email"))
                .filter_map(|s| s.endpoint().map(str::to_string)),
        );
    }
    (processor.memory_size(), scheme, emails)
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_stay_until_changed_and_survive_a_lost_state_file() {
    let env = Env::start("s1");
    let mut first = vec!["up"];
    first.extend_from_slice(FLAGS);
    let out = env.run(&first);
    assert_eq!(out.code, 0, "{out:?}");
    let want = (
        Some(1024),
        "stripe".to_string(),
        vec!["oncall@example.com".to_string()],
    );
    assert_eq!(deployed(&env).await, want);

    // The teammate's runbook: a bare up changes nothing, not even the file.
    let state_before = std::fs::read_to_string(env.state_file()).unwrap();
    env.proxy.clear();
    let bare = env.run(&["up"]);
    assert_eq!(bare.code, 0, "{bare:?}");
    assert_eq!(
        env.proxy.mutating_operations(),
        Vec::<String>::new(),
        "{bare:?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.state_file()).unwrap(),
        state_before
    );
    for cmd in ["status", "plan"] {
        let out = env.run(&[cmd]);
        assert_eq!(out.code, 0, "{cmd} after a bare up: {out:?}");
    }

    // `settings` says where each value comes from.
    let s = env.run(&["settings", "--output", "json"]);
    assert_eq!(s.code, 0, "{s:?}");
    let doc = json(&s);
    assert_eq!(setting(&doc, "api-key")["value"], "off");
    assert_eq!(setting(&doc, "api-key")["source"], "recorded");
    assert_eq!(setting(&doc, "memory.processor")["value"], "1024");
    assert_eq!(setting(&doc, "memory.receiver")["source"], "default");
    let with_flag = json(&env.run(&["settings", "--output", "json", "--timeout", "60"]));
    assert_eq!(setting(&with_flag, "timeout.receiver")["source"], "flag");
    assert_eq!(setting(&with_flag, "timeout.receiver")["value"], "60");
    let text = env.run(&["settings"]);
    assert!(
        text.stdout.contains("signature")
            && text.stdout.contains("stripe")
            && text.stdout.contains("recorded"),
        "{text:?}"
    );
    assert!(!text.stdout.contains("whsec_") && !state_before.contains("whsec_"));

    // State is a cache: with the file gone the settings come back from AWS.
    std::fs::remove_file(env.state_file()).unwrap();
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "status without a state file: {status:?}");
    let plan = env.run(&["plan"]);
    assert!(
        !plan.stdout.contains("Settings:"),
        "no setting changes without the state file: {plan:?}"
    );
    env.proxy.clear();
    let rebuilt = env.run(&["up"]);
    assert_eq!(rebuilt.code, 0, "{rebuilt:?}");
    assert_eq!(
        env.proxy.mutating_operations(),
        Vec::<String>::new(),
        "a bare up without the state file: {rebuilt:?}"
    );
    assert_eq!(deployed(&env).await, want);
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    assert_eq!(st["settings"]["signature"], "stripe", "{st:#}");
    assert_eq!(st["version"], 2);

    // Back to a default, one flag each: the plan names the setting.
    let plan = env.run(&["plan", "--api-key", "--no-alarm-email"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("Settings:"), "{plan:?}");
    assert!(
        plan.stdout.contains("api-key") && plan.stdout.contains("off -> on"),
        "{plan:?}"
    );
    assert!(
        plan.stdout.contains("alarm-email") && plan.stdout.contains("oncall@example.com -> (none)"),
        "{plan:?}"
    );
    let back = env.run(&["up", "--api-key", "--no-alarm-email", "--memory", "512"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(
        deployed(&env).await,
        (Some(512), "stripe".to_string(), vec![])
    );
    // The defaults are no longer recorded anywhere, tags included.
    std::fs::remove_file(env.state_file()).unwrap();
    let doc = json(&env.run(&["settings", "--output", "json"]));
    assert_eq!(setting(&doc, "api-key")["source"], "default", "{doc:#}");
    assert_eq!(setting(&doc, "signature")["source"], "recorded", "{doc:#}");
    assert_eq!(
        setting(&doc, "alarm-email")["value"],
        Value::Null,
        "{doc:#}"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
}

#[test]
fn contradictory_or_invalid_setting_flags_change_nothing() {
    let env = Env::start("s2");
    for args in [
        &["up", "--api-key", "--no-api-key"][..],
        &["up", "--vpc", "--no-vpc"],
        &["up", "--alarm-email", "a@example.com", "--no-alarm-email"],
        &["up", "--memory", "processor=64"],
        &["up", "--throttle-rate", "-1"],
    ] {
        let out = env.run(args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert_eq!(
            out.stderr
                .trim()
                .lines()
                .next()
                .map(|l| l.starts_with("error:")),
            Some(true),
            "{out:?}"
        );
    }
    assert!(env.proxy.calls().is_empty(), "{:?}", env.proxy.calls());
    assert!(!env.state_file().exists());

    // A record this version cannot read is refused before any call.
    std::fs::write(
        env.state_file(),
        r#"{"version": 2, "lineage": "l", "serial": 1, "suffix": "s2",
            "region": "us-east-1", "account": "123456789012",
            "settings": {"vpc": "sometimes"}, "resources": {}}"#,
    )
    .unwrap();
    let out = env.run(&["up"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("recorded setting vpc=\"sometimes\" is invalid"),
        "{out:?}"
    );
    assert!(env.proxy.mutating_calls().is_empty());
}

/// Puts one event in the table and one object in the archive (the
/// deny-non-TLS policy, which moto applies to plain HTTP, lifted meanwhile).
async fn put_data(env: &Env) {
    let conf = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    ddb.put_item()
        .table_name(TABLE)
        .item(
            "eventId",
            aws_sdk_dynamodb::types::AttributeValue::S("evt_1".into()),
        )
        .item(
            "status",
            aws_sdk_dynamodb::types::AttributeValue::S("processed".into()),
        )
        .send()
        .await
        .unwrap();
    let s3 = support::s3_client(&conf);
    let policy = s3.get_bucket_policy().bucket(BUCKET).send().await.unwrap();
    s3.delete_bucket_policy()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(BUCKET)
        .key("events/2026/12/02/evt_1.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.put_bucket_policy()
        .bucket(BUCKET)
        .policy(policy.policy().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn down_keeps_the_table_and_archive_that_hold_data_until_asked() {
    let env = Env::start("s1");
    let out = env.run(&["up", "--no-vpc"]);
    assert_eq!(out.code, 0, "{out:?}");
    let conf = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    let t = ddb.describe_table().table_name(TABLE).send().await.unwrap();
    assert_eq!(t.table().unwrap().deletion_protection_enabled(), Some(true));

    // Protection turned off out of band is drift, and up puts it back.
    ddb.update_table()
        .table_name(TABLE)
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
    let status = env.run(&["status"]);
    assert_eq!(status.code, 2, "{status:?}");
    assert!(status.stdout.contains("deletion_protection"), "{status:?}");
    assert_eq!(env.run(&["up"]).code, 0);
    assert_eq!(env.run(&["status"]).code, 0);

    put_data(&env).await;
    let down = env.run(&["down", "--yes"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(down.stderr.contains("2 kept"), "{down:?}");
    assert!(
        down.stderr.contains(&format!("table {TABLE} holds events"))
            && down
                .stderr
                .contains(&format!("bucket {BUCKET} holds objects")),
        "{down:?}"
    );
    assert!(
        down.stderr
            .contains("webhook-deploy down --suffix s1 --delete-data"),
        "{down:?}"
    );
    let item = ddb
        .get_item()
        .table_name(TABLE)
        .key(
            "eventId",
            aws_sdk_dynamodb::types::AttributeValue::S("evt_1".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(item.item().is_some(), "the event is gone");
    let s3 = support::s3_client(&conf);
    // (Listed, not read: moto applies the deny-non-TLS policy to plain HTTP.)
    let versions = s3
        .list_object_versions()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions
            .versions()
            .iter()
            .filter_map(|v| v.key())
            .collect::<Vec<_>>(),
        ["events/2026/12/02/evt_1.json"],
        "the archived event is gone"
    );
    let mut kept = nothing();
    kept.insert("tables", 1);
    kept.insert("buckets", 1);
    assert_eq!(count_tagged(&conf, "s1").await, kept);

    // A later up takes up what was kept: no duplicate, nothing lost.
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(count_tagged(&conf, "s1").await, one_stack_with(false));
    assert!(ddb
        .get_item()
        .table_name(TABLE)
        .key(
            "eventId",
            aws_sdk_dynamodb::types::AttributeValue::S("evt_1".into())
        )
        .send()
        .await
        .unwrap()
        .item()
        .is_some());

    // Asked for in words: the data goes, and with it everything.
    let all = env.run(&["down", "--yes", "--delete-data"]);
    assert_eq!(all.code, 0, "{all:?}");
    assert!(!all.stderr.contains("kept"), "{all:?}");
    assert_eq!(count_tagged(&conf, "s1").await, nothing());
    assert!(ddb.describe_table().table_name(TABLE).send().await.is_err());
    assert!(s3.head_bucket().bucket(BUCKET).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_objects_tagged_for_this_stack_are_adopted() {
    let env = Env::start("s3");
    let conf = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, Tag,
    };
    let table = |tags: Vec<Tag>| {
        ddb.create_table()
            .table_name("webhook-events-s3")
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("eventId")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("eventId")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .set_tags(Some(tags))
            .send()
    };
    // Someone else's table that merely has the name.
    table(vec![]).await.unwrap();
    let out = env.run(&["up", "--no-vpc"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("webhook-events-s3 exists without a webhook-deploy:stack tag")
            && out.stderr.contains("--adopt-untagged"),
        "{out:?}"
    );
    assert_eq!(
        env.proxy.mutating_operations(),
        Vec::<String>::new(),
        "{out:?}"
    );
    let status = env.run(&["status", "--no-vpc"]);
    assert_eq!(status.code, 1, "{status:?}");

    // Said in words: taken over, and tagged as this stack's.
    let out = env.run(&["up", "--no-vpc", "--adopt-untagged"]);
    assert_eq!(out.code, 0, "{out:?}");
    let tags = ddb
        .list_tags_of_resource()
        .resource_arn("arn:aws:dynamodb:us-east-1:123456789012:table/webhook-events-s3")
        .send()
        .await
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.key() == "webhook-deploy:stack" && t.value() == "s3"));
    assert_eq!(env.run(&["down", "--yes"]).code, 0);

    // Another stack's table is never taken, whatever the flags.
    table(vec![Tag::builder()
        .key("webhook-deploy:stack")
        .value("other")
        .build()
        .unwrap()])
    .await
    .unwrap();
    std::fs::remove_file(env.state_file()).unwrap();
    env.proxy.clear();
    let out = env.run(&["up", "--no-vpc", "--adopt-untagged"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("belongs to stack other"), "{out:?}");
    assert_eq!(
        env.proxy.mutating_operations(),
        Vec::<String>::new(),
        "{out:?}"
    );
}

/// The deployer for the same suffix in us-west-2, with its own state dir.
fn in_west(env: &Env, dir: &std::path::Path, args: &[&str]) -> support::cli::Out {
    let mut c = support::deployer(&env.proxy.endpoint(), dir);
    c.arg("--state-dir")
        .arg(dir)
        .args(["--suffix", "s4", "--region", "us-west-2"])
        .args(args);
    support::cli::run(c)
}

async fn receiver_policy(iam: &aws_sdk_iam::Client) -> Option<String> {
    iam.get_role_policy()
        .role_name("webhook-receiver-role-s4")
        .policy_name("webhook-deploy")
        .send()
        .await
        .map(|p| p.policy_document().to_string())
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_of_the_same_suffix_in_another_region_is_not_taken_over() {
    let env = Env::start("s4");
    let out = env.run(&["up", "--no-vpc"]);
    assert_eq!(out.code, 0, "{out:?}");
    let iam = aws_sdk_iam::Client::new(&env.sdk().await);
    let role = iam
        .get_role()
        .role_name("webhook-receiver-role-s4")
        .send()
        .await
        .unwrap();
    assert!(role
        .role()
        .unwrap()
        .tags()
        .iter()
        .any(|t| t.key() == "webhook-deploy:region" && t.value() == "us-east-1"));
    let policy_before = receiver_policy(&iam).await;

    // The same suffix in us-west-2 finds the us-east-1 stack's roles by
    // name (IAM is global) and leaves them alone.
    let west = tempfile::tempdir().unwrap();
    env.proxy.clear();
    let out = in_west(&env, west.path(), &["up", "--no-vpc"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("belongs to stack s4@us-east-1"),
        "{out:?}"
    );
    assert_eq!(
        env.proxy.mutating_operations(),
        Vec::<String>::new(),
        "{out:?}"
    );
    let policy_after = receiver_policy(&iam).await;
    assert_eq!(policy_before, policy_after);

    // Nor does a down there delete them.
    let down = in_west(&env, west.path(), &["down", "--yes"]);
    assert_eq!(down.code, 1, "{down:?}");
    assert!(
        down.stderr
            .contains("role webhook-receiver-role-s4 belongs to the stack s4 in us-east-1"),
        "{down:?}"
    );
    assert_eq!(receiver_policy(&iam).await, policy_before);
    assert_eq!(env.run(&["status", "--no-vpc"]).code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_is_applied_as_made_or_refused_when_anything_moved() {
    let env = Env::start("s5");
    let file = env.state_dir().join("plan.json");
    let file = file.to_str().unwrap();

    // A plan for a new stack: saved, nothing changed.
    let plan = env.run(&["plan", "--no-vpc", "--out", file]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("Plan: "), "{plan:?}");
    assert_eq!(env.proxy.mutating_operations(), Vec::<String>::new());
    assert!(!env.state_file().exists());
    let saved = std::fs::read_to_string(file).unwrap();
    assert!(!saved.contains("whsec_"), "{saved}");

    // Applied as made, with the settings it was made with.
    let up = env.run(&["up", "--plan", file]);
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(env.run(&["status"]).code, 0, "--no-vpc came with the plan");
    let doc = json(&env.run(&["settings", "--output", "json"]));
    assert_eq!(setting(&doc, "vpc")["value"], "off", "{doc:#}");

    // Once applied, the state it was made from has moved.
    env.proxy.clear();
    let again = env.run(&["up", "--plan", file]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stderr.contains("the state file changed since plan"),
        "{again:?}"
    );
    assert_eq!(env.proxy.mutating_operations(), Vec::<String>::new());

    // A change out of band after the plan was made: refused, nothing changed.
    let plan = env.run(&["plan", "--memory", "processor=1024", "--out", file]);
    assert_eq!(plan.code, 2, "{plan:?}");
    let lambda = aws_sdk_lambda::Client::new(&env.sdk().await);
    lambda
        .update_function_configuration()
        .function_name(RECEIVER_S5)
        .memory_size(256)
        .send()
        .await
        .unwrap();
    env.proxy.clear();
    let moved = env.run(&["up", "--plan", file]);
    assert_eq!(moved.code, 1, "{moved:?}");
    assert!(
        moved.stderr.contains("the stack changed since plan") && moved.stderr.contains("differs"),
        "{moved:?}"
    );
    assert_eq!(env.proxy.mutating_operations(), Vec::<String>::new());

    // Flags beside a saved plan, a damaged plan, another stack's plan.
    let flagged = env.run(&["up", "--plan", file, "--no-api-key"]);
    assert_eq!(flagged.code, 1, "{flagged:?}");
    assert!(
        flagged.stderr.contains("drop the setting flags"),
        "{flagged:?}"
    );
    let mut other: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    other["stack"] = "zz".into();
    std::fs::write(file, other.to_string()).unwrap();
    let foreign = env.run(&["up", "--plan", file]);
    assert_eq!(foreign.code, 1, "{foreign:?}");
    assert!(
        foreign.stderr.contains("is for stack 'zz', not 's5'"),
        "{foreign:?}"
    );
    std::fs::write(file, "{ not a plan").unwrap();
    let corrupt = env.run(&["up", "--plan", file]);
    assert_eq!(corrupt.code, 1, "{corrupt:?}");
    assert!(
        corrupt.stderr.contains("is not a webhook-deploy plan"),
        "{corrupt:?}"
    );
    assert_eq!(env.proxy.mutating_operations(), Vec::<String>::new());

    // Without a terminal, up shows its plan before it changes anything.
    let up = env.run(&["up", "--timeout", "processor=60"]);
    assert_eq!(up.code, 0, "{up:?}");
    let (plan_at, done_at) = (
        up.stderr
            .find("Plan for stack s5")
            .expect("the plan is shown"),
        up.stderr.find("up: ").expect("the summary"),
    );
    assert!(plan_at < done_at, "{up:?}");
    assert!(up.stderr.contains("timeout_s"), "{up:?}");
}

#[test]
fn on_a_terminal_up_shows_its_plan_and_asks_before_the_first_change() {
    use support::cli::on_a_terminal;
    let env = Env::start("s6");
    let no = on_a_terminal(&env.cmd(&["up", "--no-vpc"]), "no");
    assert_eq!(no.code, 1, "{no:?}");
    assert!(
        no.stdout.contains("Plan for stack s6") && no.stdout.contains("Apply these changes"),
        "{no:?}"
    );
    assert!(
        no.stdout.contains("not confirmed; nothing was changed"),
        "{no:?}"
    );
    assert_eq!(env.proxy.mutating_operations(), Vec::<String>::new());
    assert!(!env.state_file().exists());

    let yes = on_a_terminal(&env.cmd(&["up", "--no-vpc"]), "yes");
    assert_eq!(yes.code, 0, "{yes:?}");
    assert_eq!(env.run(&["status"]).code, 0);

    // Nothing to change: nothing to ask. --yes: not asked.
    let noop = on_a_terminal(&env.cmd(&["up"]), "");
    assert_eq!(noop.code, 0, "{noop:?}");
    assert!(!noop.stdout.contains("Apply these changes"), "{noop:?}");
    let skip = on_a_terminal(&env.cmd(&["up", "--yes", "--timeout", "processor=45"]), "");
    assert_eq!(skip.code, 0, "{skip:?}");
    assert!(!skip.stdout.contains("Apply these changes"), "{skip:?}");
    assert!(
        skip.stdout.contains("timeout_s"),
        "the plan is still shown: {skip:?}"
    );
}
