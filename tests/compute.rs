//! The network and compute layer against moto, through the recording proxy:
//! settings read back, no-op, a one-flag change, drift, adoption, the
//! `--no-vpc` switch both ways, IAM-propagation and ENI retries, teardown.

mod support;

#[allow(dead_code)]
#[path = "../src/lambdas.rs"]
mod lambdas;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use support::moto::Moto;
use support::proxy::{Matcher, Proxy, Rule};

const SUFFIX: &str = "c1";
const ACCOUNT: &str = "123456789012";
const TABLE: &str = "webhook-events-c1";
const BUCKET: &str = "webhook-archive-c1-123456789012-us-east-1";
const FUNCTIONS: [(&str, &str); 3] = [
    ("webhook-receiver-c1", "receiver"),
    ("event-processor-c1", "processor"),
    ("dead-letter-handler-c1", "dead-letter-handler"),
];
const ROLES: [&str; 3] = [
    "webhook-receiver-role-c1",
    "event-processor-role-c1",
    "dead-letter-handler-role-c1",
];
/// Resources of the whole stack as far as these layers go (foundation 8 +
/// network 9 + compute 6); the API/monitoring layers add theirs.
const NETWORK: usize = 9;

struct Env {
    moto: Moto,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} in {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }
}

impl Env {
    fn start() -> Self {
        let moto = Moto::start();
        let proxy = Proxy::start(&moto.endpoint);
        Self {
            moto,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = support::deployer(&self.proxy.endpoint(), self.state_dir());
        c.arg("--state-dir")
            .arg(self.state_dir())
            .arg("--suffix")
            .arg(SUFFIX)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        run(self.cmd(args))
    }

    /// `up`, asserting success, and printing what it cost (calls, seconds).
    fn up(&self, args: &[&str]) -> Out {
        self.proxy.clear();
        let out = self.run(&[&["up"], args].concat());
        assert_eq!(out.code, 0, "{out:?}");
        eprintln!(
            "up {args:?}: {} calls ({} mutating) in {:.1}s",
            self.proxy.calls().len(),
            self.proxy.mutating_calls().len(),
            out.secs
        );
        out
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        // Straight to moto: checks do not show up among the deployer's calls.
        support::sdk_config(&self.moto.endpoint).await
    }

    fn state_file(&self) -> std::path::PathBuf {
        self.state_dir().join(format!("{SUFFIX}.json"))
    }
}

fn run(mut c: Command) -> Out {
    let t = Instant::now();
    let o = c
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run webhook-deploy");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
        secs: t.elapsed().as_secs_f64(),
    }
}

fn stack_filter(key: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// The processor's event source mappings.
async fn processor_mappings(
    lambda: &aws_sdk_lambda::Client,
) -> Vec<aws_sdk_lambda::types::EventSourceMappingConfiguration> {
    lambda
        .list_event_source_mappings()
        .function_name(FUNCTIONS[1].0)
        .send()
        .await
        .unwrap()
        .event_source_mappings()
        .to_vec()
}

fn ours() -> aws_sdk_ec2::types::Filter {
    stack_filter("webhook-deploy:stack", SUFFIX)
}

fn by_id(id: &str) -> aws_sdk_ec2::types::Filter {
    stack_filter("webhook-deploy:resource", id)
}

fn embedded(package: &str) -> &'static lambdas::EmbeddedLambda {
    lambdas::get(package).unwrap()
}

fn drifted(status_json: &str) -> BTreeMap<String, Vec<String>> {
    let v: Value = serde_json::from_str(status_json).unwrap();
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "drifted" || r["status"] == "extra")
        .map(|r| {
            let fields = r["drift"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|d| d["field"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (r["id"].as_str().unwrap().to_string(), fields)
        })
        .collect()
}

/// Everything tagged with the stack, every kind (the shared inventory).
async fn count_tagged(conf: &aws_config::SdkConfig) -> BTreeMap<&'static str, usize> {
    support::inventory::count_tagged(conf, SUFFIX).await
}

fn full_counts(vpc: bool) -> BTreeMap<&'static str, usize> {
    support::inventory::one_stack_with(vpc)
}

async fn role_policy(iam: &aws_sdk_iam::Client, role: &str) -> Value {
    let p = iam
        .get_role_policy()
        .role_name(role)
        .policy_name("webhook-deploy")
        .send()
        .await
        .unwrap();
    serde_json::from_str(&urlencoding::decode(p.policy_document()).unwrap()).unwrap()
}

fn has_action(policy: &Value, action: &str) -> bool {
    policy["Statement"].as_array().unwrap().iter().any(|s| {
        let a = &s["Action"];
        a.as_str() == Some(action)
            || a.as_array()
                .is_some_and(|v| v.iter().any(|x| x.as_str() == Some(action)))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn up_creates_network_and_compute_with_the_spec_settings() {
    let env = Env::start();
    let out = env.up(&[]);
    let conf = env.sdk().await;

    // A fresh stack: nothing is found, so no object's details are read, and
    // nothing inside the VPC is looked for (the VPC is new).
    let calls = env.proxy.calls();
    for op in [
        "ListRoleTags",
        "DescribeContinuousBackups",
        "DescribeTimeToLive",
        "ListTagsOfResource",
        "ListTagsForResource",
        "DescribeSubnets",
        "DescribeRouteTables",
        "DescribeSecurityGroups",
        "DescribeVpcEndpoints",
        "DescribeVpcAttribute",
    ] {
        let n = calls.iter().filter(|c| c.operation == op).count();
        assert_eq!(n, 0, "{op} in a fresh up: {calls:#?}");
    }
    // Nothing is looked for inside the new functions and bucket: neither
    // function policy nor the bucket's notifications.
    let inside_new: Vec<_> = calls
        .iter()
        .filter(|c| {
            (c.service == "lambda"
                && c.operation.starts_with("GET")
                && c.operation.ends_with("/policy"))
                || (c.service == "s3"
                    && c.operation.starts_with("GET")
                    && c.operation.ends_with("?notification"))
        })
        .collect();
    assert!(inside_new.is_empty(), "{inside_new:#?}");
    // Nor for a mapping of the new table's stream: the mapping is listed
    // neither ahead nor once the function exists.
    let mapping_lists: Vec<_> = calls
        .iter()
        .filter(|c| {
            c.service == "lambda"
                && c.operation
                    .starts_with("GET /2015-03-31/event-source-mappings")
        })
        .collect();
    assert!(mapping_lists.is_empty(), "{mapping_lists:#?}");
    // The stream-read policy's own existence check; the roles' policies
    // are not read.
    let policy_reads = calls.iter().filter(|c| c.operation == "GetRolePolicy");
    assert_eq!(policy_reads.count(), 1, "{calls:#?}");
    // moto answers CreateVpc with `available`: the VPC is looked up once.
    let vpc_reads = calls.iter().filter(|c| c.operation == "DescribeVpcs");
    assert_eq!(vpc_reads.count(), 1, "{calls:#?}");

    // Network.
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpcs = ec2.describe_vpcs().filters(ours()).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1);
    let vpc = &vpcs.vpcs()[0];
    let vpc_id = vpc.vpc_id().unwrap();
    assert_eq!(vpc.cidr_block(), Some("10.0.0.0/16"));
    assert!(vpc
        .tags()
        .iter()
        .any(|t| t.key() == Some("Name") && t.value() == Some("webhook-vpc-c1")));
    for attr in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
    ] {
        let a = ec2
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attr.clone())
            .send()
            .await
            .unwrap();
        let on = a
            .enable_dns_hostnames()
            .or(a.enable_dns_support())
            .and_then(|v| v.value());
        assert_eq!(on, Some(true), "{attr:?}");
    }
    let zones = ec2.describe_availability_zones().send().await.unwrap();
    let mut zones: Vec<_> = zones
        .availability_zones()
        .iter()
        .map(|z| z.zone_name().unwrap().to_string())
        .collect();
    zones.sort();
    let mut subnet_ids = Vec::new();
    for (i, (id, cidr)) in [("subnet-a", "10.0.1.0/24"), ("subnet-b", "10.0.2.0/24")]
        .into_iter()
        .enumerate()
    {
        let s = ec2
            .describe_subnets()
            .filters(ours())
            .filters(by_id(id))
            .send()
            .await
            .unwrap();
        assert_eq!(s.subnets().len(), 1, "{id}");
        let s = &s.subnets()[0];
        assert_eq!(s.cidr_block(), Some(cidr));
        assert_eq!(s.vpc_id(), Some(vpc_id));
        assert_eq!(
            s.availability_zone(),
            Some(zones[i].as_str()),
            "first two zones, discovered"
        );
        subnet_ids.push(s.subnet_id().unwrap().to_string());
    }
    let rt = ec2
        .describe_route_tables()
        .filters(ours())
        .send()
        .await
        .unwrap();
    let rt = &rt.route_tables()[0];
    let mut assoc: Vec<_> = rt
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id().map(str::to_string))
        .collect();
    assoc.sort();
    let mut want_assoc = subnet_ids.clone();
    want_assoc.sort();
    assert_eq!(
        assoc, want_assoc,
        "both subnets explicitly on the route table"
    );
    let sg = ec2
        .describe_security_groups()
        .filters(ours())
        .send()
        .await
        .unwrap();
    let sg = &sg.security_groups()[0];
    let sg_id = sg.group_id().unwrap().to_string();
    assert!(
        sg.ip_permissions().is_empty(),
        "no ingress: {:?}",
        sg.ip_permissions()
    );
    let egress: Vec<_> = sg
        .ip_permissions_egress()
        .iter()
        .flat_map(|p| {
            p.ip_ranges().iter().map(move |r| {
                (
                    p.ip_protocol().unwrap().to_string(),
                    p.from_port(),
                    p.to_port(),
                    r.cidr_ip().unwrap().to_string(),
                )
            })
        })
        .collect();
    assert_eq!(
        egress,
        vec![(
            "tcp".to_string(),
            Some(443),
            Some(443),
            "0.0.0.0/0".to_string()
        )]
    );
    let eps = ec2
        .describe_vpc_endpoints()
        .filters(ours())
        .send()
        .await
        .unwrap();
    let mut services: Vec<_> = eps
        .vpc_endpoints()
        .iter()
        .map(|e| e.service_name().unwrap().to_string())
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "com.amazonaws.us-east-1.dynamodb",
            "com.amazonaws.us-east-1.s3"
        ]
    );
    for e in eps.vpc_endpoints() {
        assert_eq!(e.vpc_endpoint_type().unwrap().as_str(), "Gateway");
        assert_eq!(
            e.route_table_ids(),
            [rt.route_table_id().unwrap().to_string()]
        );
        assert_eq!(e.vpc_id(), Some(vpc_id));
    }

    // Functions.
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let mut arns = BTreeMap::new();
    let mut secret = String::new();
    for ((name, package), role) in FUNCTIONS.iter().zip(ROLES) {
        let f = lambda
            .get_function()
            .function_name(*name)
            .send()
            .await
            .unwrap();
        let c = f.configuration().unwrap();
        assert_eq!(c.runtime().unwrap().as_str(), "provided.al2023");
        assert_eq!(c.handler(), Some("bootstrap"));
        assert_eq!(
            c.code_sha256(),
            Some(embedded(package).sha256_b64.trim()),
            "{name}: the embedded zip"
        );
        assert_eq!(c.memory_size(), Some(512));
        assert_eq!(c.timeout(), Some(30));
        assert_eq!(
            c.role(),
            Some(format!("arn:aws:iam::{ACCOUNT}:role/{role}").as_str())
        );
        assert_eq!(
            c.tracing_config().unwrap().mode().unwrap().as_str(),
            "Active"
        );
        let vpc_conf = c.vpc_config().unwrap();
        let mut subnets = vpc_conf.subnet_ids().to_vec();
        subnets.sort();
        assert_eq!(subnets, want_assoc, "{name}");
        assert_eq!(vpc_conf.security_group_ids(), std::slice::from_ref(&sg_id));
        let env_vars = c.environment().unwrap().variables().unwrap();
        assert_eq!(env_vars["TABLE_NAME"], TABLE);
        if *package == "receiver" {
            assert_eq!(env_vars["SIGNATURE_SCHEME"], "standard-webhooks");
            secret = env_vars["SIGNING_SECRET"].clone();
            assert!(
                secret.starts_with("whsec_") && secret.len() > 40,
                "generated Standard Webhooks secret"
            );
        } else {
            assert_eq!(env_vars["BUCKET_NAME"], BUCKET);
        }
        assert_eq!(f.tags().unwrap()["webhook-deploy:stack"], SUFFIX);
        arns.insert(*package, c.function_arn().unwrap().to_string());
    }
    // The generated secret is in neither the state file nor the output.
    let state = std::fs::read_to_string(env.state_file()).unwrap();
    assert!(
        !state.contains(&secret) && !out.stdout.contains(&secret) && !out.stderr.contains(&secret)
    );
    assert!(!state.contains("whsec_"), "{state}");

    // Stream mapping.
    let table = aws_sdk_dynamodb::Client::new(&conf)
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap();
    let stream_arn = table
        .table()
        .unwrap()
        .latest_stream_arn()
        .unwrap()
        .to_string();
    let maps = processor_mappings(&lambda).await;
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(m.event_source_arn(), Some(stream_arn.as_str()));
    assert_eq!(m.function_arn(), Some(arns["processor"].as_str()));
    assert_eq!(m.starting_position().unwrap().as_str(), "TRIM_HORIZON");
    assert_eq!(m.state(), Some("Enabled"));
    assert_eq!(m.batch_size(), Some(10));
    assert_eq!(m.maximum_retry_attempts(), Some(3));
    assert_eq!(m.bisect_batch_on_function_error(), Some(true));
    let age = m.maximum_record_age_in_seconds().unwrap();
    assert!((60..=86_400).contains(&age), "bounded record age: {age}");
    assert_eq!(
        m.function_response_types()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        ["ReportBatchItemFailures"]
    );
    let filters = m.filter_criteria().unwrap().filters();
    assert_eq!(filters.len(), 1);
    let pattern: Value = serde_json::from_str(filters[0].pattern().unwrap()).unwrap();
    assert_eq!(pattern, serde_json::json!({ "eventName": ["INSERT"] }));
    let dest = m
        .destination_config()
        .unwrap()
        .on_failure()
        .unwrap()
        .destination()
        .unwrap();
    assert_eq!(dest, format!("arn:aws:s3:::{BUCKET}"));

    // Failure records → dead-letter handler.
    let s3 = support::s3_client(&conf);
    let n = s3
        .get_bucket_notification_configuration()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(n.lambda_function_configurations().len(), 1);
    let c = &n.lambda_function_configurations()[0];
    assert_eq!(
        c.lambda_function_arn(),
        arns["dead-letter-handler"].as_str()
    );
    assert_eq!(
        c.events().iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        ["s3:ObjectCreated:*"]
    );
    let rules = c.filter().unwrap().key().unwrap().filter_rules();
    assert_eq!(rules.len(), 1);
    assert!(rules[0]
        .name()
        .unwrap()
        .as_str()
        .eq_ignore_ascii_case("prefix"));
    assert_eq!(
        rules[0].value(),
        Some("aws/lambda/"),
        "Lambda's failure-record key layout"
    );
    let policy = lambda
        .get_policy()
        .function_name(FUNCTIONS[2].0)
        .send()
        .await
        .unwrap();
    let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    let stmts = policy["Statement"].as_array().unwrap();
    assert_eq!(stmts.len(), 1);
    assert_eq!(stmts[0]["Principal"]["Service"], "s3.amazonaws.com");
    assert_eq!(stmts[0]["Action"], "lambda:InvokeFunction");
    assert_eq!(
        stmts[0]["Condition"]["ArnLike"]["AWS:SourceArn"],
        format!("arn:aws:s3:::{BUCKET}")
    );
    assert_eq!(
        stmts[0]["Condition"]["StringEquals"]["AWS:SourceAccount"],
        ACCOUNT
    );

    // Function-side IAM statements.
    let iam = aws_sdk_iam::Client::new(&conf);
    for role in ROLES {
        let p = role_policy(&iam, role).await;
        assert!(has_action(&p, "ec2:CreateNetworkInterface"), "{role}");
        assert!(has_action(&p, "xray:PutTraceSegments"), "{role}");
    }
    assert_eq!(count_tagged(&conf).await, full_counts(true));
}

#[test]
fn noop_up_is_silent_and_a_memory_flag_updates_only_that_configuration() {
    let env = Env::start();
    env.up(&[]);
    let state_before = std::fs::read_to_string(env.state_file()).unwrap();
    let again = env.up(&[]);
    assert!(again.stderr.contains(" 0 created, 0 updated"), "{again:?}");
    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "no-op up mutated: {m:#?}");
    // Siblings are read with one call: two subnets, two endpoints, six alarms.
    let calls = env.proxy.calls();
    for op in ["DescribeSubnets", "DescribeVpcEndpoints", "DescribeAlarms"] {
        let n = calls.iter().filter(|c| c.operation == op).count();
        assert_eq!(n, 1, "{op}: {calls:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(env.state_file()).unwrap(),
        state_before,
        "no-op up rewrote state"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("In sync."), "{status:?}");

    let changed = env.up(&["--memory", "processor=1024"]);
    assert!(changed.stderr.contains("2 updated"), "{changed:?}");
    let mut m: Vec<String> = env
        .proxy
        .mutating_calls()
        .iter()
        .map(|c| format!("{} {}", c.service, c.operation))
        .collect();
    m.sort();
    // The receiver's tags record the setting (a lost state file keeps it).
    assert_eq!(
        m,
        [
            "lambda POST /2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Awebhook-receiver-c1",
            "lambda PUT /2015-03-31/functions/event-processor-c1/configuration",
        ],
        "only that configuration and the recorded setting, no code upload"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "the setting stays: {status:?}");
    let back = env.run(&["status", "--memory", "512"]);
    assert_eq!(back.code, 2, "memory back to 512 is a change: {back:?}");
    assert!(back.stdout.contains("memory_mb"), "{back:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_is_named_by_status_and_repaired_by_up() {
    let env = Env::start();
    env.up(&[]);
    let conf = env.sdk().await;
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let maps = processor_mappings(&lambda).await;
    let uuid = maps[0].uuid().unwrap().to_string();
    lambda
        .update_event_source_mapping()
        .uuid(&uuid)
        .enabled(false)
        // Events held for 5 minutes before the processor sees them.
        .maximum_batching_window_in_seconds(300)
        .send()
        .await
        .unwrap();
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let sg = ec2
        .describe_security_groups()
        .filters(ours())
        .send()
        .await
        .unwrap();
    let sg_id = sg.security_groups()[0].group_id().unwrap().to_string();
    ec2.authorize_security_group_ingress()
        .group_id(&sg_id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("0.0.0.0/0")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    lambda
        .update_function_configuration()
        .function_name(FUNCTIONS[0].0)
        .memory_size(256)
        .send()
        .await
        .unwrap();

    let status = env.run(&["status"]);
    assert_eq!(status.code, 2, "{status:?}");
    for needle in [
        "stream-mapping",
        "enabled",
        "lambda-sg",
        "ingress",
        "receiver-function",
        "memory_mb",
    ] {
        assert!(
            status.stdout.contains(needle),
            "status does not name {needle}: {status:?}"
        );
    }
    let json = env.run(&["status", "--output", "json"]);
    assert_eq!(json.code, 2, "{json:?}");
    assert_eq!(
        drifted(&json.stdout),
        BTreeMap::from([
            (
                "stream-mapping".to_string(),
                vec![
                    "enabled".to_string(),
                    "maximum_batching_window_in_seconds".to_string()
                ]
            ),
            ("lambda-sg".to_string(), vec!["ingress".to_string()]),
            (
                "receiver-function".to_string(),
                vec!["memory_mb".to_string()]
            ),
        ])
    );

    let up = env.up(&[]);
    assert!(up.stderr.contains("3 updated"), "{up:?}");
    let m = env.proxy.mutating_operations();
    assert!(
        !m.iter().any(|o| o.ends_with("/code")),
        "code re-uploaded: {m:?}"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let sg = ec2
        .describe_security_groups()
        .group_ids(&sg_id)
        .send()
        .await
        .unwrap();
    assert!(sg.security_groups()[0].ip_permissions().is_empty());
    let m = lambda
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .unwrap();
    assert_eq!(m.state(), Some("Enabled"));
    assert_eq!(m.maximum_batching_window_in_seconds(), Some(0));

    // The table deleted out of band: up makes a new one, and the recorded
    // mapping, left on the old table's stream, is replaced, not orphaned.
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    ddb.update_table()
        .table_name(TABLE)
        .deletion_protection_enabled(false)
        .send()
        .await
        .unwrap();
    ddb.delete_table().table_name(TABLE).send().await.unwrap();
    env.up(&[]);
    let stream = ddb
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.latest_stream_arn())
        .unwrap()
        .to_string();
    let maps = processor_mappings(&lambda).await;
    let sources: Vec<_> = maps
        .iter()
        .map(|m| m.event_source_arn().unwrap_or_default())
        .collect();
    assert_eq!(sources, [stream.as_str()], "{maps:?}");
    assert!(lambda
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .is_err());
}

/// The VPC's DNS settings and the route table's associations are resources
/// of their own: a state file from before (which has neither) adopts them
/// without a call that changes anything, and drift in either is named and
/// repaired, a foreign subnet detached.
#[tokio::test(flavor = "multi_thread")]
async fn vpc_dns_and_route_table_associations_adopt_and_repair() {
    let env = Env::start();
    env.up(&[]);
    let mut st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    let resources = st["resources"].as_object_mut().unwrap();
    for id in ["vpc-dns", "route-table-associations"] {
        assert!(resources.remove(id).is_some(), "{id} not recorded");
    }
    std::fs::write(env.state_file(), serde_json::to_string(&st).unwrap()).unwrap();
    let out = env.up(&[]);
    assert!(out.stderr.contains(", 2 adopted"), "{out:?}");
    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "adoption mutated AWS: {m:#?}");

    let conf = env.sdk().await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let vpc_id = ec2
        .describe_vpcs()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let subnet_id = |id: &str| {
        let ec2 = ec2.clone();
        let id = id.to_string();
        async move {
            ec2.describe_subnets()
                .filters(ours())
                .filters(by_id(&id))
                .send()
                .await
                .unwrap()
                .subnets()[0]
                .subnet_id()
                .unwrap()
                .to_string()
        }
    };
    let (subnet_a, subnet_b) = (subnet_id("subnet-a").await, subnet_id("subnet-b").await);
    let route_table = || async {
        ec2.describe_route_tables()
            .filters(ours())
            .filters(by_id("route-table"))
            .send()
            .await
            .unwrap()
            .route_tables()[0]
            .clone()
    };
    let rt = route_table().await;
    let rt_id = rt.route_table_id().unwrap().to_string();
    let assoc_a = rt
        .associations()
        .iter()
        .find(|a| a.subnet_id() == Some(subnet_a.as_str()))
        .and_then(|a| a.route_table_association_id())
        .unwrap()
        .to_string();

    // Out of band: DNS hostnames off, subnet-a detached, a foreign subnet
    // attached to the stack's route table.
    ec2.modify_vpc_attribute()
        .vpc_id(&vpc_id)
        .enable_dns_hostnames(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(false)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ec2.disassociate_route_table()
        .association_id(&assoc_a)
        .send()
        .await
        .unwrap();
    let foreign = ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.0.9.0/24")
        .send()
        .await
        .unwrap();
    let foreign = foreign.subnet().unwrap().subnet_id().unwrap().to_string();
    ec2.associate_route_table()
        .route_table_id(&rt_id)
        .subnet_id(&foreign)
        .send()
        .await
        .unwrap();

    let json = env.run(&["status", "--output", "json"]);
    assert_eq!(json.code, 2, "{json:?}");
    assert_eq!(
        drifted(&json.stdout),
        BTreeMap::from([
            ("vpc-dns".to_string(), vec!["dns_hostnames".to_string()]),
            (
                "route-table-associations".to_string(),
                vec!["subnet_associations".to_string()]
            ),
        ])
    );
    let up = env.up(&[]);
    assert!(up.stderr.contains("2 updated"), "{up:?}");
    assert!(
        up.stderr.contains(&format!("detaching subnet {foreign}")),
        "{up:?}"
    );
    let hostnames = ec2
        .describe_vpc_attribute()
        .vpc_id(&vpc_id)
        .attribute(aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames)
        .send()
        .await
        .unwrap();
    assert_eq!(
        hostnames.enable_dns_hostnames().and_then(|v| v.value()),
        Some(true)
    );
    let mut have: Vec<String> = route_table()
        .await
        .associations()
        .iter()
        .filter(|a| !a.main().unwrap_or(false))
        .filter_map(|a| a.subnet_id().map(String::from))
        .collect();
    have.sort();
    let mut want = vec![subnet_a, subnet_b];
    want.sort();
    assert_eq!(have, want);
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_state_is_rebuilt_by_adoption_without_duplicates() {
    let env = Env::start();
    env.up(&[]);
    let secret_before = receiver_secret(&env.sdk().await).await;
    std::fs::remove_file(env.state_file()).unwrap();
    let status = env.run(&["status"]);
    assert_eq!(
        status.code, 0,
        "everything exists, only the state is gone: {status:?}"
    );
    let out = env.up(&[]);
    assert!(out.stderr.contains(" 0 created"), "{out:?}");
    assert!(
        !out.stderr.contains(" 0 adopted") && out.stderr.contains("adopted"),
        "{out:?}"
    );
    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "adoption mutated AWS: {m:#?}");
    let conf = env.sdk().await;
    assert_eq!(count_tagged(&conf).await, full_counts(true));
    assert_eq!(
        receiver_secret(&conf).await,
        secret_before,
        "the generated secret survives"
    );
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    for id in [
        "vpc",
        "vpc-dns",
        "subnet-a",
        "subnet-b",
        "route-table",
        "route-table-associations",
        "lambda-sg",
        "s3-endpoint",
        "dynamodb-endpoint",
        "receiver-function",
        "processor-function",
        "dead-letter-function",
        "stream-mapping",
        "dead-letter-s3-permission",
        "failure-notification",
    ] {
        assert!(
            st["resources"][id]["physical_id"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{id} not adopted: {st}"
        );
    }
}

async fn receiver_secret(conf: &aws_config::SdkConfig) -> String {
    let lambda = aws_sdk_lambda::Client::new(conf);
    let c = lambda
        .get_function_configuration()
        .function_name(FUNCTIONS[0].0)
        .send()
        .await
        .unwrap();
    c.environment().unwrap().variables().unwrap()["SIGNING_SECRET"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_vpc_removes_the_network_and_back() {
    let env = Env::start();
    env.up(&[]);
    let conf = env.sdk().await;
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let iam = aws_sdk_iam::Client::new(&conf);

    let out = env.up(&["--no-vpc"]);
    assert!(
        out.stderr.contains(&format!("{NETWORK} deleted")),
        "{out:?}"
    );
    for (name, _) in FUNCTIONS {
        let c = lambda
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .unwrap();
        let v = c.vpc_config();
        assert!(
            v.is_none_or(|v| v.subnet_ids().is_empty() && v.security_group_ids().is_empty()),
            "{name} still in a VPC: {v:?}"
        );
    }
    assert_eq!(count_tagged(&conf).await, full_counts(false));
    for role in ROLES {
        assert!(
            !has_action(&role_policy(&iam, role).await, "ec2:CreateNetworkInterface"),
            "{role}: ENI actions outside a VPC"
        );
    }
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state_file()).unwrap()).unwrap();
    assert!(
        st["resources"].get("vpc").is_none() && st["resources"].get("lambda-sg").is_none(),
        "network records left in state: {st:#}"
    );
    let status = env.run(&["status", "--no-vpc"]);
    assert_eq!(status.code, 0, "{status:?}");
    let noop = env.up(&["--no-vpc"]);
    assert!(env.proxy.mutating_calls().is_empty(), "{noop:?}");
    let plan = env.run(&["plan"]);
    assert_eq!(plan.code, 0, "--no-vpc stays: {plan:?}");
    let plan = env.run(&["plan", "--vpc"]);
    assert_eq!(plan.code, 2, "{plan:?}");

    let back = env.up(&["--vpc"]);
    assert!(
        back.stderr.contains(&format!("{NETWORK} created")),
        "{back:?}"
    );
    assert_eq!(count_tagged(&conf).await, full_counts(true));
    for (name, _) in FUNCTIONS {
        let c = lambda
            .get_function_configuration()
            .function_name(name)
            .send()
            .await
            .unwrap();
        assert_eq!(c.vpc_config().unwrap().subnet_ids().len(), 2, "{name}");
    }
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");

    // `status --no-vpc` on a VPC stack names the network as extra.
    let extra = env.run(&["status", "--no-vpc", "--output", "json"]);
    assert_eq!(extra.code, 2, "{extra:?}");
    let d = drifted(&extra.stdout);
    assert!(
        d.contains_key("vpc") && d.contains_key("lambda-sg"),
        "{d:?}"
    );
}

/// A function whose read said "missing" but whose create then found it
/// (a conflict) is adopted, not new: its permission is looked for, not
/// added blindly into a policy that already has it.
#[test]
fn a_create_that_finds_the_function_adopts_it_and_reads_what_is_inside() {
    let env = Env::start();
    env.up(&[]);
    let dead_letter = format!("GET /2015-03-31/functions/{}", FUNCTIONS[2].0);
    env.proxy.add_rule(Rule::fail(
        Matcher::custom(move |r| r.service == "lambda" && r.operation == dead_letter),
        1,
        404,
        "ResourceNotFoundException",
        "Function not found",
    ));
    let out = env.up(&[]);
    assert!(out.stderr.contains(", 1 adopted"), "{out:?}");
    let m = env.proxy.mutating_operations();
    assert!(
        m.iter().any(|o| o == "POST /2015-03-31/functions"),
        "the create was not tried: {m:?}"
    );
    assert!(
        !m.iter().any(|o| o.ends_with("/policy")),
        "permission added again: {m:?}"
    );
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
}

#[test]
fn create_function_waits_for_the_role_to_propagate() {
    let env = Env::start();
    let create_fn =
        Matcher::custom(|r| r.service == "lambda" && r.operation == "POST /2015-03-31/functions");
    env.proxy.add_rule(Rule::fail(
        create_fn,
        2,
        400,
        "InvalidParameterValueException",
        "The role defined for the function cannot be assumed by Lambda.",
    ));
    let out = env.up(&[]);
    assert!(
        out.stderr
            .contains("waiting for the execution role to propagate"),
        "{out:?}"
    );
    assert_eq!(env.proxy.injected_calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_mapping_waits_for_the_stream_read_policy_to_propagate() {
    let env = Env::start();
    const CREATE_MAPPING: &str = "POST /2015-03-31/event-source-mappings";
    let is_create_mapping =
        |c: &support::proxy::Call| c.service == "lambda" && c.operation.starts_with(CREATE_MAPPING);
    env.proxy.add_rule(Rule::fail(
        Matcher::custom(|r| r.service == "lambda" && r.operation.starts_with(CREATE_MAPPING)),
        2,
        400,
        "InvalidParameterValueException",
        "Cannot access stream arn:aws:dynamodb:us-east-1:123456789012:table/x/stream/y. Please ensure the role can perform the GetRecords, GetShardIterator, DescribeStream, and ListStreams Actions on your stream in IAM.",
    ));
    let out = env.up(&[]);
    assert!(
        out.stderr
            .contains("waiting for the execution role to propagate"),
        "{out:?}"
    );
    let calls = env.proxy.calls();
    assert_eq!(env.proxy.injected_calls().len(), 2);
    // AWS checks the role's stream access when the mapping is made: the
    // second inline policy goes in before the first attempt.
    let first_mapping = calls.iter().position(is_create_mapping).unwrap();
    let puts = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.operation == "PutRolePolicy")
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert_eq!(
        puts.len(),
        4,
        "three roles plus the stream reads: {calls:#?}"
    );
    assert!(puts.iter().all(|i| *i < first_mapping), "{calls:#?}");
    assert_eq!(count_tagged(&env.sdk().await).await["mappings"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn down_waits_for_network_interfaces_within_its_timeout_and_leaves_nothing() {
    let env = Env::start();
    env.up(&[]);
    // Lambda's ENIs linger: the subnets go after two retries; the security
    // group not within a short --eni-timeout, so down gives up, visibly.
    env.proxy.add_rule(Rule::fail(
        "ec2:DeleteSubnet",
        2,
        400,
        "DependencyViolation",
        "The subnet has dependencies and cannot be deleted.",
    ));
    env.proxy.add_rule(Rule::fail(
        "ec2:DeleteSecurityGroup",
        usize::MAX,
        400,
        "DependencyViolation",
        "resource sg-1 has a dependent object",
    ));
    env.proxy.clear();
    let short = env.run(&["down", "--yes", "--eni-timeout", "3s"]);
    assert_eq!(short.code, 1, "{short:?}");
    assert!(short.secs < 60.0, "{short:?}");
    assert!(
        short.stderr.contains(
            "waiting for Lambda's network interfaces to be released before deleting the subnet"
        ),
        "{short:?}"
    );
    assert!(
        short.stderr.contains("lambda-sg (security-group)")
            && short.stderr.contains("DependencyViolation"),
        "{short:?}"
    );
    assert!(
        short
            .stderr
            .contains("vpc (vpc): not attempted because lambda-sg failed"),
        "{short:?}"
    );
    // What to do about it, in the same sentence; no SDK debug structs.
    assert!(
        short.stderr.contains(
            "still attached after --eni-timeout 3s: run `webhook-deploy down` again later"
        ) && !short.stderr.contains("Error {"),
        "{short:?}"
    );
    let first_calls = env.proxy.calls().len();

    // Then the interfaces are gone: down finishes what is left.
    env.proxy.clear_rules();
    env.proxy.clear();
    let down = env.run(&["down", "--yes"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        down.stderr.contains("2 deleted"),
        "security group and VPC: {down:?}"
    );
    eprintln!(
        "down: {} + {} calls in {:.1}s + {:.1}s",
        first_calls,
        env.proxy.calls().len(),
        short.secs,
        down.secs
    );
    let conf = env.sdk().await;
    let none: BTreeMap<_, _> = full_counts(false).into_keys().map(|k| (k, 0)).collect();
    assert_eq!(count_tagged(&conf).await, none);
    let iam = aws_sdk_iam::Client::new(&conf);
    for r in ROLES {
        assert!(
            iam.get_role().role_name(r).send().await.is_err(),
            "{r} still exists"
        );
    }
    let again = env.run(&["down", "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains(" 0 deleted"), "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_signing_secret_is_applied_but_never_shown_or_stored() {
    let env = Env::start();
    let secret = "whsec_b3BlcmF0b3Itc2VjcmV0LWZvci10ZXN0cw==";
    let with_secret = |args: &[&str], value: &str| {
        let mut c = env.cmd(args);
        c.env("TEST_WEBHOOK_SECRET", value);
        run(c)
    };
    let up = with_secret(
        &["up", "--signing-secret-env", "TEST_WEBHOOK_SECRET"],
        secret,
    );
    assert_eq!(up.code, 0, "{up:?}");
    let conf = env.sdk().await;
    assert_eq!(receiver_secret(&conf).await, secret);
    let state = std::fs::read_to_string(env.state_file()).unwrap();
    assert!(!state.contains(secret) && !up.stdout.contains(secret) && !up.stderr.contains(secret));
    assert!(
        state.contains("$TEST_WEBHOOK_SECRET"),
        "state names the source: {state}"
    );

    // Without the flag the deployed secret is kept (read back, not replaced).
    let status = env.run(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    // Another value is drift, shown without either value.
    let other = "whsec_YW5vdGhlci1zZWNyZXQtdmFsdWU=";
    let status = with_secret(
        &["status", "--signing-secret-env", "TEST_WEBHOOK_SECRET"],
        other,
    );
    assert_eq!(status.code, 2, "{status:?}");
    assert!(status.stdout.contains("signing_secret"), "{status:?}");
    for s in [secret, other] {
        assert!(
            !status.stdout.contains(s) && !status.stderr.contains(s),
            "{status:?}"
        );
    }
    // A secret that does not fit the scheme is refused before any call.
    env.proxy.clear();
    let bad = with_secret(
        &["up", "--signing-secret-env", "TEST_WEBHOOK_SECRET"],
        "not base64!",
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("TEST_WEBHOOK_SECRET") && !bad.stderr.contains("not base64!"),
        "{bad:?}"
    );
    assert!(env.proxy.calls().is_empty());

    // --signature none removes the secret from the function.
    let none = env.up(&["--signature", "none"]);
    assert!(none.stderr.contains("1 updated"), "{none:?}");
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let c = lambda
        .get_function_configuration()
        .function_name(FUNCTIONS[0].0)
        .send()
        .await
        .unwrap();
    let vars = c.environment().unwrap().variables().unwrap();
    assert_eq!(vars["SIGNATURE_SCHEME"], "none");
    assert!(!vars.contains_key("SIGNING_SECRET"), "{vars:?}");
}
