//! The deployer against moto, through the recording proxy: create, no-op,
//! drift, adoption, teardown, and refusals of bad input.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::cli::{run, Env};
use support::inventory::{count_tagged, nothing, one_stack};
use support::proxy::{Matcher, Rule};

const SUFFIX: &str = "t1";
const TABLE: &str = "webhook-events-t1";
const BUCKET: &str = "webhook-archive-t1-123456789012-us-east-1";
const ROLES: [&str; 3] = [
    "webhook-receiver-role-t1",
    "event-processor-role-t1",
    "dead-letter-handler-role-t1",
];
const LOG_GROUPS: [&str; 3] = [
    "/aws/lambda/webhook-receiver-t1",
    "/aws/lambda/event-processor-t1",
    "/aws/lambda/dead-letter-handler-t1",
];

/// Every resource of the stack: 9 foundation (table, bucket, 3 log groups,
/// 3 roles, the processor role's stream-read policy), 15 network and compute
/// (VPC, its DNS settings, 2 subnets, route table, its associations,
/// security group, 2 endpoints, 3 functions, stream mapping, S3 permission,
/// failure notification), 16 API and monitoring (REST API, /webhook, POST, invoke
/// permission, deployment, stage, usage plan, key, plan key, SNS topic,
/// 6 alarms).
const ALL: usize = 40;

fn env() -> Env {
    Env::start(SUFFIX)
}

/// GET on moto without the SDK (moto's GetBucketVersioning document has a
/// root element the SDK's strict parser rejects).
fn raw_get(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let authority = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn decode(doc: &str) -> Value {
    serde_json::from_str(&urlencoding::decode(doc).unwrap()).unwrap()
}

fn statements_for(policy: &Value, action: &str) -> Vec<Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            let a = &s["Action"];
            a.as_str() == Some(action)
                || a.as_array()
                    .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(action)))
        })
        .cloned()
        .collect()
}

fn resources_of(stmt: &Value) -> Vec<String> {
    match &stmt["Resource"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(v) => v.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        _ => vec![],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_every_resource_with_the_spec_settings() {
    let env = env();
    let out = env.run(&["up"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(&format!("up: {ALL} created")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("tableName = {TABLE}")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("bucketName = {BUCKET}")),
        "{out:?}"
    );

    let conf = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    let t = ddb.describe_table().table_name(TABLE).send().await.unwrap();
    let t = t.table().unwrap();
    let keys: Vec<_> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![("eventId", "HASH")],
        "dedupe needs eventId alone as the key"
    );
    assert_eq!(
        t.billing_mode_summary()
            .unwrap()
            .billing_mode()
            .unwrap()
            .as_str(),
        "PAY_PER_REQUEST"
    );
    assert_eq!(
        t.sse_description().unwrap().status().unwrap().as_str(),
        "ENABLED"
    );
    let stream = t.stream_specification().unwrap();
    assert!(stream.stream_enabled());
    assert_eq!(
        stream.stream_view_type().unwrap().as_str(),
        "NEW_AND_OLD_IMAGES"
    );
    let stream_arn = t.latest_stream_arn().unwrap().to_string();
    let pitr = ddb
        .describe_continuous_backups()
        .table_name(TABLE)
        .send()
        .await
        .unwrap();
    let pitr = pitr
        .continuous_backups_description()
        .unwrap()
        .point_in_time_recovery_description()
        .unwrap();
    assert_eq!(
        pitr.point_in_time_recovery_status().unwrap().as_str(),
        "ENABLED"
    );
    let ttl = ddb
        .describe_time_to_live()
        .table_name(TABLE)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expiresAt"));
    assert_eq!(ttl.time_to_live_status().unwrap().as_str(), "ENABLED");
    let tags = ddb
        .list_tags_of_resource()
        .resource_arn(t.table_arn().unwrap())
        .send()
        .await
        .unwrap();
    let tags: BTreeMap<_, _> = tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags["webhook-deploy:stack"], SUFFIX);
    assert_eq!(tags["webhook-deploy:resource"], "events-table");
    assert_eq!(tags["Environment"], SUFFIX);
    assert_eq!(tags["Project"], "webhook-processing");
    assert_eq!(tags["ManagedBy"], "webhook-deploy");
    assert_eq!(tags["Name"], TABLE);

    let s3 = support::s3_client(&conf);
    let versioning = raw_get(&env.moto.endpoint, &format!("/{BUCKET}?versioning"));
    assert!(
        versioning.contains("<Status>Enabled</Status>"),
        "{versioning}"
    );
    let enc = s3
        .get_bucket_encryption()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
    assert_eq!(
        rule.apply_server_side_encryption_by_default()
            .unwrap()
            .sse_algorithm()
            .as_str(),
        "AES256"
    );
    assert_eq!(rule.bucket_key_enabled(), Some(true));
    let lc = s3
        .get_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let r = &lc.rules()[0];
    assert_eq!(r.status().as_str(), "Enabled");
    assert_eq!(r.transitions()[0].days(), Some(30));
    assert_eq!(
        r.transitions()[0].storage_class().unwrap().as_str(),
        "GLACIER"
    );
    assert!(
        r.noncurrent_version_expiration()
            .unwrap()
            .noncurrent_days()
            .unwrap()
            > 0
    );
    assert!(
        r.abort_incomplete_multipart_upload()
            .unwrap()
            .days_after_initiation()
            .unwrap()
            > 0
    );
    let pab = s3
        .get_public_access_block()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    let pab = pab.public_access_block_configuration().unwrap();
    assert_eq!(
        [
            pab.block_public_acls(),
            pab.ignore_public_acls(),
            pab.block_public_policy(),
            pab.restrict_public_buckets()
        ],
        [Some(true); 4]
    );
    let pol: Value = serde_json::from_str(
        s3.get_bucket_policy()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap(),
    )
    .unwrap();
    let deny = &pol["Statement"][0];
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    let btags = s3.get_bucket_tagging().bucket(BUCKET).send().await.unwrap();
    assert!(btags
        .tag_set()
        .iter()
        .any(|t| t.key() == "webhook-deploy:stack" && t.value() == SUFFIX));

    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    for name in LOG_GROUPS {
        let g = logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .send()
            .await
            .unwrap();
        let g = g
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(name))
            .expect(name);
        assert_eq!(g.retention_in_days(), Some(7), "{name}");
    }

    let iam = aws_sdk_iam::Client::new(&conf);
    let table_arn = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}");
    let bucket_arn = format!("arn:aws:s3:::{BUCKET}");
    for (role, log_group) in ROLES.iter().zip(LOG_GROUPS) {
        let r = iam.get_role().role_name(*role).send().await.unwrap();
        let trust = decode(r.role().unwrap().assume_role_policy_document().unwrap());
        assert_eq!(
            trust["Statement"][0]["Principal"]["Service"],
            "lambda.amazonaws.com"
        );
        let rtags = iam.list_role_tags().role_name(*role).send().await.unwrap();
        assert!(rtags
            .tags()
            .iter()
            .any(|t| t.key() == "webhook-deploy:stack" && t.value() == SUFFIX));
        let p = iam
            .get_role_policy()
            .role_name(*role)
            .policy_name("webhook-deploy")
            .send()
            .await
            .unwrap();
        let p = decode(p.policy_document());
        for s in p["Statement"].as_array().unwrap() {
            for res in resources_of(s) {
                // Only what AWS cannot scope may use "*": X-Ray writes and
                // the network-interface actions of VPC functions.
                if res == "*" {
                    let actions: Vec<&str> = s["Action"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap())
                        .collect();
                    for a in actions {
                        let eni = [
                            "ec2:CreateNetworkInterface",
                            "ec2:DescribeNetworkInterfaces",
                            "ec2:DescribeSubnets",
                            "ec2:DeleteNetworkInterface",
                            "ec2:AssignPrivateIpAddresses",
                            "ec2:UnassignPrivateIpAddresses",
                        ]
                        .contains(&a);
                        let xray =
                            ["xray:PutTraceSegments", "xray:PutTelemetryRecords"].contains(&a);
                        // The init-time connection warm-up; it has no resource type.
                        let warm_up = a == "dynamodb:DescribeEndpoints";
                        assert!(eni || xray || warm_up, "{role}: unscoped statement {s}");
                    }
                }
            }
        }
        let logs_stmt = statements_for(&p, "logs:PutLogEvents");
        assert_eq!(
            resources_of(&logs_stmt[0]),
            vec![format!(
                "arn:aws:logs:us-east-1:123456789012:log-group:{log_group}:*"
            )]
        );
    }
    let named_policy = |role: &str, name: &str| {
        let iam = iam.clone();
        let (role, name) = (role.to_string(), name.to_string());
        async move {
            decode(
                iam.get_role_policy()
                    .role_name(role)
                    .policy_name(name)
                    .send()
                    .await
                    .unwrap()
                    .policy_document(),
            )
        }
    };
    let policy = |role: &str| named_policy(role, "webhook-deploy");
    let receiver = policy(ROLES[0]).await;
    assert_eq!(
        resources_of(&statements_for(&receiver, "dynamodb:PutItem")[0]),
        vec![table_arn.clone()]
    );
    assert!(statements_for(&receiver, "dynamodb:UpdateItem").is_empty());
    let processor = policy(ROLES[1]).await;
    assert_eq!(
        resources_of(&statements_for(&processor, "dynamodb:UpdateItem")[0]),
        vec![table_arn.clone()]
    );
    // The stream reads are the processor role's second inline policy,
    // scoped to this table's stream.
    assert!(statements_for(&processor, "dynamodb:GetRecords").is_empty());
    let stream_reads = named_policy(ROLES[1], "webhook-deploy-stream").await;
    assert_eq!(
        resources_of(&statements_for(&stream_reads, "dynamodb:GetRecords")[0]),
        vec![stream_arn]
    );
    assert_eq!(
        resources_of(&statements_for(&stream_reads, "dynamodb:ListStreams")[0]),
        vec![format!("{table_arn}/stream/*")]
    );
    let puts = resources_of(&statements_for(&processor, "s3:PutObject")[0]);
    assert!(puts.contains(&format!("{bucket_arn}/events/*")), "{puts:?}");
    assert!(
        puts.contains(&format!("{bucket_arn}/aws/lambda/*")),
        "{puts:?}"
    );
    // The functions' init-time connection warm-up is allowed, so a cold
    // start does not log an AccessDenied: DescribeEndpoints for DynamoDB,
    // HeadBucket (s3:ListBucket on the bucket) for S3.
    for role in ROLES {
        let p = policy(role).await;
        assert_eq!(
            resources_of(&statements_for(&p, "dynamodb:DescribeEndpoints")[0]),
            vec!["*".to_string()],
            "{role}"
        );
    }
    let dl = policy(ROLES[2]).await;
    assert_eq!(
        resources_of(&statements_for(&dl, "s3:ListBucket")[0]),
        vec![bucket_arn.clone()]
    );
    assert_eq!(
        resources_of(&statements_for(&dl, "s3:GetObject")[0]),
        vec![format!("{bucket_arn}/aws/lambda/*")]
    );
    assert_eq!(
        resources_of(&statements_for(&dl, "s3:PutObject")[0]),
        vec![format!("{bucket_arn}/dead-letters/*")]
    );
    assert_eq!(
        resources_of(&statements_for(&dl, "dynamodb:UpdateItem")[0]),
        vec![table_arn]
    );

    // The state file records ids and attributes, and is well formed.
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    assert_eq!(st["version"], 2);
    assert_eq!(st["suffix"], SUFFIX);
    assert_eq!(st["region"], "us-east-1");
    assert_eq!(st["account"], "123456789012");
    assert!(st["serial"].as_u64().unwrap() >= ALL as u64);
    assert_eq!(st["resources"]["events-table"]["physical_id"], TABLE);
    assert!(st["resources"]["events-table"]["attrs"]["stream_arn"]
        .as_str()
        .unwrap()
        .contains("/stream/"));
    assert_eq!(st["resources"].as_object().unwrap().len(), ALL);

    // outputs reads the state, text and JSON.
    let o = env.run(&["outputs", "--output", "json"]);
    assert_eq!(o.code, 0, "{o:?}");
    let o: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(o["tableName"], TABLE);
    assert_eq!(o["bucketName"], BUCKET);
}

#[test]
fn noop_up_makes_no_mutating_call_and_status_is_clean() {
    let env = env();
    assert_eq!(env.run(&["up"]).code, 0);
    let serial_before = std::fs::read_to_string(env.state_file()).unwrap();
    env.proxy.clear();
    let out = env.run(&["up"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("up: 0 created, 0 updated, {ALL} unchanged")),
        "{out:?}"
    );
    let mutating = env.proxy.mutating_calls();
    assert!(mutating.is_empty(), "no-op up mutated: {mutating:#?}");
    assert!(
        !env.proxy.calls().is_empty(),
        "the proxy saw no call at all"
    );
    assert_eq!(
        std::fs::read_to_string(env.state_file()).unwrap(),
        serial_before,
        "a no-op up rewrote state"
    );

    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("In sync."), "{status:?}");
    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(env.proxy.mutating_calls().is_empty());

    // The state file names the account: the reads go out beside the account
    // lookup, not after it.
    env.proxy.add_rule(Rule::latency(
        Matcher::service("sts"),
        Duration::from_millis(1000),
    ));
    for command in ["status", "up"] {
        env.proxy.clear();
        let out = env.run(&[command]);
        assert_eq!(out.code, 0, "{out:?}");
        let timeline = env.proxy.timeline();
        let sts = timeline
            .iter()
            .find(|t| t.call.service == "sts")
            .expect("an account lookup");
        let beside = timeline
            .iter()
            .filter(|t| t.call.service != "sts" && t.start < sts.end)
            .count();
        assert!(
            beside >= ALL,
            "{command}: only {beside} of {} reads went out before the account lookup answered",
            timeline.len() - 1
        );
        assert!(env.proxy.mutating_calls().is_empty());
    }
    // When the lookup fails, what was read is dropped: one sentence, no
    // progress lines, nothing changed.
    env.proxy.clear_rules();
    env.proxy.add_rule(Rule::fail(
        "sts:GetCallerIdentity",
        10,
        403,
        "ExpiredToken",
        "The security token included in the request is expired",
    ));
    env.proxy.clear();
    let expired = env.run(&["up"]);
    env.proxy.clear_rules();
    assert_eq!(expired.code, 1, "{expired:?}");
    assert!(
        expired
            .stderr
            .contains("AWS refused the credentials (sts:GetCallerIdentity: ExpiredToken"),
        "{expired:?}"
    );
    assert_eq!(expired.stderr.trim().lines().count(), 1, "{expired:?}");
    assert!(expired.stdout.is_empty(), "{expired:?}");
    assert!(env.proxy.mutating_calls().is_empty());
    assert_eq!(
        std::fs::read_to_string(env.state_file()).unwrap(),
        serial_before,
        "a refused run rewrote state"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_band_drift_is_reported_then_repaired() {
    let env = env();
    assert_eq!(env.run(&["up"]).code, 0);
    let conf = env.sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    ddb.update_continuous_backups()
        .table_name(TABLE)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let s3 = support::s3_client(&conf);
    s3.put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Suspended)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // A second lifecycle rule that would delete the whole archive after a day.
    let ours = s3
        .get_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    let purge = aws_sdk_s3::types::LifecycleRule::builder()
        .id("purge")
        .status(aws_sdk_s3::types::ExpirationStatus::Enabled)
        .filter(
            aws_sdk_s3::types::LifecycleRuleFilter::builder()
                .prefix("")
                .build(),
        )
        .expiration(
            aws_sdk_s3::types::LifecycleExpiration::builder()
                .days(1)
                .build(),
        )
        .build()
        .unwrap();
    s3.put_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .lifecycle_configuration(
            aws_sdk_s3::types::BucketLifecycleConfiguration::builder()
                .set_rules(Some(ours.into_iter().chain([purge]).collect()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // A tag someone added, even in our namespace, is theirs: not drift
    // (`up` would never remove it).
    let table_arn = ddb
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap()
        .table()
        .unwrap()
        .table_arn()
        .unwrap()
        .to_string();
    ddb.tag_resource()
        .resource_arn(&table_arn)
        .tags(
            aws_sdk_dynamodb::types::Tag::builder()
                .key("webhook-deploy:old")
                .value("1")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    logs.put_retention_policy()
        .log_group_name(LOG_GROUPS[1])
        .retention_in_days(30)
        .send()
        .await
        .unwrap();
    let iam = aws_sdk_iam::Client::new(&conf);
    iam.put_role_policy()
        .role_name(ROLES[0])
        .policy_name("webhook-deploy")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"dynamodb:*","Resource":"*"}]}"#)
        .send()
        .await
        .unwrap();
    // The roles' tags come with GetRole: a lost tag is drift all the same.
    iam.untag_role()
        .role_name(ROLES[1])
        .tag_keys("Project")
        .send()
        .await
        .unwrap();

    let status = env.run(&["status"]);
    assert_eq!(status.code, 2, "{status:?}");
    for needle in [
        "events-table",
        "point_in_time_recovery",
        "archive-bucket",
        "versioning",
        "processor-logs",
        "retention_days",
        "receiver-role",
        "policy",
    ] {
        assert!(
            status.stdout.contains(needle),
            "status does not name {needle}: {status:?}"
        );
    }
    let json = env.run(&["status", "--output", "json"]);
    assert_eq!(json.code, 2, "{json:?}");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    let drifted: BTreeMap<String, Vec<String>> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "drifted")
        .map(|r| {
            let fields = r["drift"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["field"].as_str().unwrap().to_string())
                .collect();
            (r["id"].as_str().unwrap().to_string(), fields)
        })
        .collect();
    assert_eq!(
        drifted,
        BTreeMap::from([
            ("events-table".into(), vec!["point_in_time_recovery".into()]),
            (
                "archive-bucket".into(),
                vec!["versioning".into(), "lifecycle".into()]
            ),
            ("processor-logs".into(), vec!["retention_days".into()]),
            ("receiver-role".into(), vec!["policy".into()]),
            ("processor-role".into(), vec!["tags".into()]),
        ])
    );

    env.proxy.clear();
    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("~ archive-bucket"), "{plan:?}");
    assert!(plan.stdout.contains("5 to update"), "{plan:?}");
    assert!(
        env.proxy.mutating_calls().is_empty(),
        "plan mutated: {:#?}",
        env.proxy.mutating_calls()
    );

    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert!(up.stderr.contains("5 updated"), "{up:?}");
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let role = iam.get_role().role_name(ROLES[1]).send().await.unwrap();
    let tags = role.role().unwrap().tags();
    assert!(
        tags.iter()
            .any(|t| t.key() == "Project" && t.value() == "webhook-processing"),
        "{tags:?}"
    );
    let p = iam
        .get_role_policy()
        .role_name(ROLES[0])
        .policy_name("webhook-deploy")
        .send()
        .await
        .unwrap();
    assert!(
        !p.policy_document().contains("dynamodb%3A%2A")
            && !decode(p.policy_document())
                .to_string()
                .contains("dynamodb:*")
    );
    let rules = s3
        .get_bucket_lifecycle_configuration()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].id(), Some("webhook-archive"));
}

/// A stack deployed before the stream reads had their own policy: they sat
/// in the processor role's main policy. `up` moves them and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn stream_reads_move_to_their_own_policy_on_upgrade() {
    let env = env();
    assert_eq!(env.run(&["up"]).code, 0);
    let iam = aws_sdk_iam::Client::new(&env.sdk().await);
    let get = |name: &'static str| {
        let iam = iam.clone();
        async move {
            iam.get_role_policy()
                .role_name(ROLES[1])
                .policy_name(name)
                .send()
                .await
                .map(|p| decode(p.policy_document()))
        }
    };
    let main = get("webhook-deploy").await.unwrap();
    let stream = get("webhook-deploy-stream").await.unwrap();
    // The earlier layout: one policy holding both.
    let mut old = main["Statement"].as_array().unwrap().clone();
    old.extend(stream["Statement"].as_array().unwrap().iter().cloned());
    iam.put_role_policy()
        .role_name(ROLES[1])
        .policy_name("webhook-deploy")
        .policy_document(serde_json::json!({"Version": "2012-10-17", "Statement": old}).to_string())
        .send()
        .await
        .unwrap();
    iam.delete_role_policy()
        .role_name(ROLES[1])
        .policy_name("webhook-deploy-stream")
        .send()
        .await
        .unwrap();

    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("~ processor-role"), "{plan:?}");
    assert!(
        plan.stdout.contains("+ processor-stream-policy"),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("1 to create, 1 to update"), "{plan:?}");
    env.proxy.clear();
    let up = env.run(&["up"]);
    assert_eq!(up.code, 0, "{up:?}");
    assert!(up.stderr.contains("1 created, 1 updated"), "{up:?}");
    let muts = env.proxy.mutating_operations();
    assert_eq!(muts, ["PutRolePolicy", "PutRolePolicy"], "{muts:?}");
    assert_eq!(get("webhook-deploy").await.unwrap(), main);
    assert_eq!(get("webhook-deploy-stream").await.unwrap(), stream);
    assert_eq!(env.run(&["status"]).code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_state_is_rebuilt_by_adoption_without_duplicates() {
    let env = env();
    assert_eq!(env.run(&["up"]).code, 0);
    std::fs::remove_file(env.state_file()).unwrap();
    let status = env.run(&["status"]);
    assert_eq!(
        status.code, 0,
        "everything exists, only the state is gone: {status:?}"
    );
    env.proxy.clear();
    let out = env.run(&["up"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains(&format!(", {ALL} adopted")), "{out:?}");
    assert!(out.stderr.contains("0 created"), "{out:?}");
    let creates: Vec<_> = env.proxy.mutating_calls();
    assert!(creates.is_empty(), "adoption mutated AWS: {creates:#?}");
    assert_eq!(count_tagged(&env.sdk().await, SUFFIX).await, one_stack());
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    assert_eq!(st["resources"].as_object().unwrap().len(), ALL);
}

async fn ddb_table_gone(conf: &aws_config::SdkConfig) -> bool {
    aws_sdk_dynamodb::Client::new(conf)
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn down_keeps_a_bucket_with_objects_then_empties_it_when_asked() {
    let env = env();
    assert_eq!(env.run(&["up"]).code, 0);
    let conf = env.sdk().await;
    let s3 = support::s3_client(&conf);
    // Several versions of one key, a delete marker, and another key. The
    // deny-non-TLS policy blocks plain-HTTP object writes, so lift it for the
    // setup (down must cope with it in place, so it is put back after).
    let policy = s3
        .get_bucket_policy()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .to_string();
    s3.delete_bucket_policy()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    for i in 0..3 {
        s3.put_object()
            .bucket(BUCKET)
            .key("events/2026/11/28/a.json")
            .body(format!("v{i}").into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    s3.delete_object()
        .bucket(BUCKET)
        .key("events/2026/11/28/a.json")
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(BUCKET)
        .key("dead-letters/b.json")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    s3.put_bucket_policy()
        .bucket(BUCKET)
        .policy(policy)
        .send()
        .await
        .unwrap();
    let v = s3
        .list_object_versions()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(v.versions().len(), 4);
    assert_eq!(v.delete_markers().len(), 1);

    // The archive holds data: a plain down keeps it (the empty table goes).
    let kept = env.run(&["down", "--yes"]);
    assert_eq!(kept.code, 0, "{kept:?}");
    assert!(
        kept.stderr
            .contains(&format!("down: {} deleted, 1 kept", ALL - 1)),
        "{kept:?}"
    );
    assert!(
        kept.stderr
            .contains(&format!("bucket {BUCKET} holds objects"))
            && kept.stderr.contains("--delete-data"),
        "{kept:?}"
    );
    let v = s3
        .list_object_versions()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!((v.versions().len(), v.delete_markers().len()), (4, 1));
    assert!(ddb_table_gone(&conf).await, "the empty table goes");

    let down = env.run(&["down", "--yes", "--delete-data"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        down.stderr
            .contains(&format!("down: 1 deleted, {} already gone", ALL - 1)),
        "{down:?}"
    );
    assert_eq!(count_tagged(&conf, SUFFIX).await, nothing());
    assert!(s3.head_bucket().bucket(BUCKET).send().await.is_err());
    let iam = aws_sdk_iam::Client::new(&conf);
    for r in ROLES {
        assert!(
            iam.get_role().role_name(r).send().await.is_err(),
            "{r} still exists"
        );
    }

    let outputs = env.run(&["outputs"]);
    assert_eq!(outputs.code, 1, "{outputs:?}");
    assert!(
        outputs.stderr.contains("has no deployed resources") && outputs.stdout.is_empty(),
        "{outputs:?}"
    );

    let again = env.run(&["down", "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("down: 0 deleted, {ALL} already gone")),
        "{again:?}"
    );
}

#[test]
fn bad_input_is_refused_with_a_precise_message_and_no_mutation() {
    let env = env();
    let state = env.state_file();

    let bad_suffix = run({
        let mut c = support::deployer(&env.proxy.endpoint(), env.state_dir());
        c.args(["--suffix", "Bad_Suffix", "up"]);
        c
    });
    assert_eq!(bad_suffix.code, 1, "{bad_suffix:?}");
    assert!(
        bad_suffix.stderr.contains("invalid --suffix"),
        "{bad_suffix:?}"
    );

    let bad_flag = env.run(&["up", "--parallel", "0"]);
    assert_eq!(
        bad_flag.code, 1,
        "usage errors must not exit 2 (drift): {bad_flag:?}"
    );

    std::fs::write(&state, "{ this is not json").unwrap();
    let corrupt = env.run(&["up"]);
    assert_eq!(corrupt.code, 1, "{corrupt:?}");
    assert!(corrupt.stderr.contains("not valid JSON"), "{corrupt:?}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "{ this is not json",
        "corrupt state was overwritten"
    );

    std::fs::write(&state, r#"{"version": 7, "lineage": "x"}"#).unwrap();
    let newer = env.run(&["plan"]);
    assert_eq!(newer.code, 1, "{newer:?}");
    assert!(newer.stderr.contains("schema version 7"), "{newer:?}");

    let foreign = serde_json::json!({
        "version": 1, "lineage": "l", "serial": 3, "suffix": SUFFIX,
        "region": "eu-west-1", "account": "123456789012", "resources": {}
    });
    std::fs::write(&state, foreign.to_string()).unwrap();
    let region = env.run(&["up"]);
    assert_eq!(region.code, 1, "{region:?}");
    assert!(region.stderr.contains("region eu-west-1"), "{region:?}");
    // With --output json, stdout still has one document to parse.
    for command in ["up", "status"] {
        let json = env.run(&[command, "--output", "json"]);
        assert_eq!(json.code, 1, "{json:?}");
        let doc: Value = serde_json::from_str(&json.stdout)
            .unwrap_or_else(|e| panic!("{command}: no JSON on stdout ({e}): {json:?}"));
        assert_eq!(doc["command"], command, "{doc}");
        assert_eq!(doc["stack"], SUFFIX, "{doc}");
        assert!(
            doc["error"]
                .as_str()
                .unwrap_or_default()
                .contains("region eu-west-1"),
            "{doc}"
        );
    }
    let outputs = env.run(&["outputs", "--region", "us-east-1"]);
    assert_eq!(outputs.code, 1, "{outputs:?}");
    assert!(outputs.stderr.contains("region eu-west-1"), "{outputs:?}");

    // outputs reads only the file, yet refuses another stack's or another
    // account's: with --show-secrets it would read that stack's secrets.
    let mut other = foreign.clone();
    other["suffix"] = "other".into();
    std::fs::write(&state, other.to_string()).unwrap();
    let copied = env.run(&["outputs"]);
    assert_eq!(copied.code, 1, "{copied:?}");
    assert!(
        copied
            .stderr
            .contains(&format!("belongs to stack 'other', not '{SUFFIX}'")),
        "{copied:?}"
    );
    let mut elsewhere = foreign.clone();
    elsewhere["region"] = "us-east-1".into();
    elsewhere["account"] = "999999999999".into();
    elsewhere["resources"] = serde_json::json!({
        "events-table": {"kind": "dynamodb-table", "physical_id": "t", "attrs": {"name": "t"}}
    });
    std::fs::write(&state, elsewhere.to_string()).unwrap();
    let secrets = env.run(&["outputs", "--show-secrets"]);
    assert_eq!(secrets.code, 1, "{secrets:?}");
    assert!(
        secrets.stderr.contains("account 999999999999") && secrets.stdout.is_empty(),
        "{secrets:?}"
    );
    // up and status read beside the account lookup; another account's
    // state file is still refused before anything changes or is reported.
    for command in ["up", "status", "down"] {
        env.proxy.clear();
        let out = env.run(&[command, "--yes"][..if command == "down" { 2 } else { 1 }]);
        assert_eq!(out.code, 1, "{command}: {out:?}");
        assert!(
            out.stderr.contains("was written for account 999999999999 but the credentials are for account 123456789012"),
            "{command}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{command}: {out:?}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{command}: {out:?}");
        assert!(env.proxy.mutating_calls().is_empty(), "{command}");
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            elsewhere.to_string()
        );
    }
    std::fs::remove_file(&state).unwrap();

    // A second run while the stack is locked.
    let lock_path = env.state_dir().join(format!("{SUFFIX}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.try_lock().unwrap();
    std::fs::write(
        &lock_path,
        "pid 4242 (webhook-deploy up) on host ci since 2026-11-28T00:00:00Z",
    )
    .unwrap();
    let locked = env.run(&["up"]);
    assert_eq!(locked.code, 1, "{locked:?}");
    assert!(
        locked
            .stderr
            .contains("locked by pid 4242 (webhook-deploy up)"),
        "{locked:?}"
    );
    drop(lock);

    let no_yes = env.run(&["down"]);
    assert_eq!(no_yes.code, 1, "{no_yes:?}");
    assert!(no_yes.stderr.contains("--yes"), "{no_yes:?}");

    let missing_creds = run({
        let mut c = env.cmd(&["status"]);
        c.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    });
    assert_eq!(missing_creds.code, 1, "{missing_creds:?}");
    assert!(
        missing_creds.stderr.contains("no AWS credentials found")
            && !missing_creds.stderr.contains("Error {"),
        "{missing_creds:?}"
    );

    // Connection settings: one sentence naming the real cause.
    let not_a_url = env.run(&["status", "--endpoint-url", "notaurl"]);
    assert_eq!(not_a_url.code, 1, "{not_a_url:?}");
    assert!(
        not_a_url.stderr.contains("invalid endpoint URL 'notaurl'"),
        "{not_a_url:?}"
    );
    let spaced = env.run(&["status", "--region", "us east"]);
    assert_eq!(spaced.code, 1, "{spaced:?}");
    assert!(
        spaced.stderr.contains("invalid AWS region 'us east'"),
        "{spaced:?}"
    );
    // Nothing listens on port 9 (discard) here: refused at once, and said so
    // without ten retries.
    let started = std::time::Instant::now();
    let unreachable = env.run(&["status", "--endpoint-url", "http://127.0.0.1:9"]);
    assert_eq!(unreachable.code, 1, "{unreachable:?}");
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the endpoint http://127.0.0.1:9"),
        "{unreachable:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{unreachable:?}"
    );
    let no_profile = run({
        let mut c = env.cmd(&["status", "--profile", "nope"]);
        c.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
        c
    });
    assert_eq!(no_profile.code, 1, "{no_profile:?}");
    assert!(
        no_profile
            .stderr
            .contains("no AWS region is configured for profile 'nope'"),
        "{no_profile:?}"
    );

    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "refused runs mutated AWS: {m:#?}");
}
