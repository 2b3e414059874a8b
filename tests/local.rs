//! The pipeline run locally against moto: `invoke` of each real function,
//! `local` + `send` end to end, a forced processor failure that ends in the
//! dead-letter path, and a `local` killed mid-batch that loses nothing.
//! The functions' AWS calls go through the recording proxy like the
//! deployer's, so faults can be injected into them.

mod support;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use support::cli::{run, Env};
use support::proxy::{Matcher, Rule};

const REGION: &str = "us-east-1";
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtZm9yLWxvY2FsLXRlc3RzLTEyMzQ1Ng==";

fn table(suffix: &str) -> String {
    format!("webhook-events-{suffix}")
}

fn bucket(suffix: &str) -> String {
    format!("webhook-archive-{suffix}-123456789012-{REGION}")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn standard_webhooks_headers(secret: &str, id: &str, body: &str) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let ts = unix_now().to_string();
    let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    m.update(format!("{id}.{ts}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts),
        ("webhook-signature".into(), format!("v1,{sig}")),
    ]
}

/// A plain HTTP/1.1 POST (the local front door is plain HTTP on loopback).
fn post(url: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

async fn item(
    env: &Env,
    suffix: &str,
    id: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    ddb.get_item()
        .table_name(table(suffix))
        .key("eventId", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

async fn status(env: &Env, suffix: &str, id: &str) -> Option<String> {
    item(env, suffix, id)
        .await
        .and_then(|i| i.get("status").and_then(|s| s.as_s().ok()).cloned())
}

async fn keys(env: &Env, suffix: &str, prefix: &str) -> Vec<String> {
    let s3 = support::s3_client(&env.sdk().await);
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = s3
            .list_objects_v2()
            .bucket(bucket(suffix))
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        token = r.next_continuation_token().map(String::from);
        if token.is_none() {
            return out;
        }
    }
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running `webhook-deploy local`, its output in files (a pipe nobody
/// reads would fill and stall it).
struct Local {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Local {
    fn start(env: &Env, extra: &[&str]) -> Local {
        let log = env
            .state_dir()
            .join(format!("local-{}.log", Instant::now().elapsed().as_nanos()));
        let log = PathBuf::from(format!("{}-{}", log.display(), std::process::id()));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = vec!["local", "--port", "0", "--no-vpc"];
        args.extend_from_slice(extra);
        let child = env
            .cmd(&args)
            .env("WH_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        let session = env
            .state_dir()
            .join(format!("{}.local-session.json", env.suffix));
        let start = Instant::now();
        let mut local = Local {
            child,
            log,
            url: String::new(),
        };
        loop {
            if let Ok(b) = std::fs::read(&session) {
                if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                    if v["pid"].as_u64() == Some(local.child.id() as u64) {
                        local.url = v["url"].as_str().unwrap().to_string();
                        return local;
                    }
                }
            }
            if let Ok(Some(s)) = local.child.try_wait() {
                panic!("local exited early ({s}):\n{}", local.output());
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "local did not start:\n{}",
                local.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api_key(env: &Env) -> String {
        let p = env
            .state_dir()
            .join(format!("{}.local-secrets.json", env.suffix));
        let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        v["apiKey"].as_str().unwrap().to_string()
    }

    fn interrupt(&mut self) -> i32 {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "local did not stop:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed_post(local: &Local, key: &str, id: &str) -> (u16, String) {
    let body = json!({"type": "payment.succeeded", "data": {"amount": 4200, "id": id}}).to_string();
    let mut h = standard_webhooks_headers(SECRET, id, &body);
    h.push(("x-api-key".into(), key.into()));
    post(&local.url, &h, &body)
}

async fn create_table_and_bucket(env: &Env, suffix: &str) {
    let conf = env.sdk().await;
    aws_sdk_dynamodb::Client::new(&conf)
        .create_table()
        .table_name(table(suffix))
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
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    support::s3_client(&conf)
        .create_bucket()
        .bucket(bucket(suffix))
        .send()
        .await
        .unwrap();
}

fn write_event(env: &Env, name: &str, v: &Value) -> String {
    let p = env.state_dir().join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_runs_each_real_function_with_its_side_effects() {
    let env = Env::start("inv");
    create_table_and_bucket(&env, "inv").await;

    // Receiver: a signed API Gateway proxy event is stored.
    let body = r#"{"type":"payment.succeeded","amount":100}"#;
    let headers: serde_json::Map<String, Value> =
        standard_webhooks_headers(SECRET, "evt_inv_1", body)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
    let event = json!({
        "resource": "/webhook", "path": "/webhook", "httpMethod": "POST",
        "headers": headers, "requestContext": {"stage": "prod", "httpMethod": "POST"},
        "body": body, "isBase64Encoded": false,
    });
    let file = write_event(&env, "receiver.json", &event);
    let mut c = env.cmd(&[
        "invoke",
        "receiver",
        "--event",
        &file,
        "--signing-secret-env",
        "WH_SECRET",
    ]);
    c.env("WH_SECRET", SECRET);
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}");
    let resp: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(resp["statusCode"], 200, "{out:?}");
    let answer: Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    assert_eq!(answer, json!({"eventId": "evt_inv_1", "duplicate": false}));
    assert!(out.stderr.contains("REPORT RequestId:"), "{out:?}");
    assert!(!out.stderr.contains(SECRET) && !out.stdout.contains(SECRET));
    let stored = item(&env, "inv", "evt_inv_1").await.expect("stored");
    assert_eq!(stored["status"].as_s().unwrap(), "received");
    assert_eq!(stored["body"].as_b().unwrap().as_ref(), body.as_bytes());

    // A wrong signature: 401 and nothing stored.
    let mut bad = event.clone();
    bad["headers"]["webhook-id"] = json!("evt_inv_forged");
    let file = write_event(&env, "forged.json", &bad);
    let mut c = env.cmd(&[
        "invoke",
        "receiver",
        "--event",
        &file,
        "--signing-secret-env",
        "WH_SECRET",
    ]);
    c.env("WH_SECRET", SECRET);
    let out = run(c);
    let resp: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(resp["statusCode"], 401, "{out:?}");
    assert!(item(&env, "inv", "evt_inv_forged").await.is_none());

    // Processor: a stream batch with that item is archived and marked processed.
    let received_at = stored["receivedAt"].as_s().unwrap().clone();
    let record = json!({
        "eventID": "1", "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": unix_now(),
            "Keys": {"eventId": {"S": "evt_inv_1"}},
            "NewImage": {
                "eventId": {"S": "evt_inv_1"},
                "body": {"B": base64::engine::general_purpose::STANDARD.encode(body)},
                "receivedAt": {"S": received_at},
                "status": {"S": "received"},
            },
            "SequenceNumber": "100", "SizeBytes": 10, "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/webhook-events-inv/stream/x",
    });
    let file = write_event(&env, "batch.json", &json!({"Records": [record]}));
    let out = env.run(&["invoke", "processor", "--event", &file]);
    assert_eq!(out.code, 0, "{out:?}");
    let resp: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(resp["batchItemFailures"], json!([]), "{out:?}");
    assert_eq!(
        status(&env, "inv", "evt_inv_1").await.as_deref(),
        Some("processed")
    );
    let archived = keys(&env, "inv", "events/").await;
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].ends_with("/evt_inv_1.json"));

    // Dead-letter handler: a failure record in the bucket holding that
    // (processed) event and one still `received` → one per-event object,
    // status failed; the processed one is left alone.
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    ddb.put_item()
        .table_name(table("inv"))
        .item("eventId", AttributeValue::S("evt_inv_2".into()))
        .item("status", AttributeValue::S("received".into()))
        .item("receivedAt", AttributeValue::S(received_at.clone()))
        .item(
            "body",
            AttributeValue::B(aws_smithy_types::Blob::new(body.as_bytes())),
        )
        .send()
        .await
        .unwrap();
    let mut second = record.clone();
    second["dynamodb"]["NewImage"]["eventId"] = json!({"S": "evt_inv_2"});
    second["dynamodb"]["Keys"]["eventId"] = json!({"S": "evt_inv_2"});
    second["dynamodb"]["SequenceNumber"] = json!("101");
    let failure = json!({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 4},
        "responseContext": {"functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-11-28T10:00:00Z",
        "DDBStreamBatchInfo": {"shardId": "shard-1", "startSequenceNumber": "100", "endSequenceNumber": "101"},
        "payload": json!({"Records": [record, second]}).to_string(),
    });
    let key =
        "aws/lambda/00000000-0000-0000-0000-000000000000/shard-1/2026/11/28/2026-11-28T10.00.00-x";
    support::s3_client(&env.sdk().await)
        .put_object()
        .bucket(bucket("inv"))
        .key(key)
        .body(failure.to_string().into_bytes().into())
        .send()
        .await
        .unwrap();
    let s3_event = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION,
        "eventTime": "2026-11-28T10:00:01.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:x"}, "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "x", "x-amz-id-2": "x"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "x",
               "bucket": {"name": bucket("inv"), "arn": format!("arn:aws:s3:::{}", bucket("inv"))},
               "object": {"key": key, "size": 1}},
    }]});
    let file = write_event(&env, "s3.json", &s3_event);
    let out = env.run(&["invoke", "dead-letter", "--event", &file]);
    assert_eq!(out.code, 0, "{out:?}");
    let resp: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(resp["deadLettered"], 1, "{out:?}");
    assert_eq!(resp["alreadyProcessed"], 1, "{out:?}");
    assert_eq!(
        keys(&env, "inv", "dead-letters/2026/11/28/").await,
        vec!["dead-letters/2026/11/28/evt_inv_2.json".to_string()]
    );
    assert_eq!(
        status(&env, "inv", "evt_inv_2").await.as_deref(),
        Some("failed")
    );
    assert_eq!(
        status(&env, "inv", "evt_inv_1").await.as_deref(),
        Some("processed")
    );

    // Bad input: a clear error, exit 1, nothing invoked.
    std::fs::write(env.state_dir().join("junk.json"), "not json").unwrap();
    let junk = env.state_dir().join("junk.json").display().to_string();
    let out = env.run(&["invoke", "processor", "--event", &junk]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is not JSON"), "{out:?}");
    let out = env.run(&["invoke", "nothing", "--event", &junk]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("unknown function"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_and_send_carry_a_signed_event_end_to_end() {
    let env = Env::start("loc");
    let mut local = Local::start(&env, &["--signing-secret-env", "WH_SECRET"]);
    let key = Local::api_key(&env);

    // `local` took the secret from $WH_SECRET: send needs the same.
    let out = env.run(&["send", "--local"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("$WH_SECRET"), "{out:?}");
    // The smoke test: stored, processed, archived, with timings.
    let mut c = env.cmd(&["send", "--local"]);
    c.env("WH_SECRET", SECRET);
    let out = run(c);
    assert_eq!(out.code, 0, "{out:?}\n--- local\n{}", local.output());
    for stage in ["accepted", "stored", "processed", "archived"] {
        assert!(out.stdout.contains(stage), "{stage}: {out:?}");
    }
    assert!(!out.stdout.contains(&key) && !out.stdout.contains(SECRET));

    // A signed event, then the same event again: a duplicate, one row.
    let (code, body) = signed_post(&local, &key, "evt_loc_1");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["duplicate"],
        false
    );
    let (code, body) = signed_post(&local, &key, "evt_loc_1");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["duplicate"],
        true
    );
    wait_until("evt_loc_1 processed", Duration::from_secs(60), || async {
        status(&env, "loc", "evt_loc_1").await.as_deref() == Some("processed")
    })
    .await;
    let archived = keys(&env, "loc", "events/").await;
    let mine: Vec<&String> = archived
        .iter()
        .filter(|k| k.ends_with("/evt_loc_1.json"))
        .collect();
    assert_eq!(mine.len(), 1, "{archived:?}");
    // The archive holds the body byte for byte as it was posted.
    let obj = support::s3_client(&env.sdk().await)
        .get_object()
        .bucket(bucket("loc"))
        .key(mine[0])
        .send()
        .await
        .unwrap();
    let bytes = obj.body.collect().await.unwrap().into_bytes();
    assert_eq!(
        bytes.as_ref(),
        json!({"type": "payment.succeeded", "data": {"amount": 4200, "id": "evt_loc_1"}})
            .to_string()
            .as_bytes()
    );

    // A bad signature: 401, nothing stored.
    let body = r#"{"type":"payment.succeeded"}"#;
    let mut h = standard_webhooks_headers(
        "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==",
        "evt_loc_forged",
        body,
    );
    h.push(("x-api-key".into(), key.clone()));
    let (code, _) = post(&local.url, &h, body);
    assert_eq!(code, 401);
    // Without the API key: 403 before the receiver runs.
    let h = standard_webhooks_headers(SECRET, "evt_loc_nokey", body);
    let (code, answer) = post(&local.url, &h, body);
    assert_eq!(code, 403, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["message"],
        "Forbidden"
    );
    let mut h = standard_webhooks_headers(SECRET, "evt_loc_badkey", body);
    h.push(("x-api-key".into(), format!("{key}x")));
    assert_eq!(post(&local.url, &h, body).0, 403);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in ["evt_loc_forged", "evt_loc_nokey", "evt_loc_badkey"] {
        assert!(item(&env, "loc", id).await.is_none(), "{id} was stored");
    }

    // Ctrl-C: a clean stop, the session file removed.
    assert_eq!(local.interrupt(), 0, "{}", local.output());
    assert!(
        local.output().contains("local: stopped"),
        "{}",
        local.output()
    );
    assert!(!env.state_dir().join("loc.local-session.json").exists());
    // `send --local` now says what to do.
    let out = env.run(&["send", "--local"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("webhook-deploy local"), "{out:?}");
    // Nothing secret in the state files.
    for f in ["loc.local.json", "loc.local-stream.json"] {
        let text = std::fs::read_to_string(env.state_dir().join(f)).unwrap();
        assert!(!text.contains(SECRET) && !text.contains(&key), "{f}");
    }
    // The secrets file is private to its owner.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(env.state_dir().join("loc.local-secrets.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "secrets file mode {mode:o}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_event_is_dead_lettered_and_the_rest_of_its_batch_processed() {
    let env = Env::start("dlq");
    // The processor's archive write of one event is denied, every time.
    env.proxy.add_rule(Rule::fail(
        Matcher::custom(|r| {
            r.method == "PUT"
                && r.path_and_query.contains("/events/")
                && r.path_and_query.contains("evt_dlq_bad")
        }),
        usize::MAX,
        403,
        "AccessDenied",
        "Access Denied",
    ));
    let mut local = Local::start(&env, &["--signing-secret-env", "WH_SECRET"]);
    let key = Local::api_key(&env);
    let ids: Vec<String> = (0..5)
        .map(|i| {
            if i == 2 {
                "evt_dlq_bad".to_string()
            } else {
                format!("evt_dlq_ok{i}")
            }
        })
        .collect();
    for id in &ids {
        let (code, body) = signed_post(&local, &key, id);
        assert_eq!(code, 200, "{body}");
    }
    wait_until(
        "the bad event marked failed",
        Duration::from_secs(90),
        || async { status(&env, "dlq", "evt_dlq_bad").await.as_deref() == Some("failed") },
    )
    .await;
    for id in ids.iter().filter(|i| i.contains("ok")) {
        wait_until("good events processed", Duration::from_secs(30), || async {
            status(&env, "dlq", id).await.as_deref() == Some("processed")
        })
        .await;
    }
    let failure_records = keys(&env, "dlq", "aws/lambda/").await;
    assert!(!failure_records.is_empty(), "{}", local.output());
    let dead = keys(&env, "dlq", "dead-letters/").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].ends_with("/evt_dlq_bad.json"));
    let archived = keys(&env, "dlq", "events/").await;
    assert_eq!(archived.len(), 4, "{archived:?}");
    assert!(
        local.output().contains("RetryAttemptsExhausted"),
        "{}",
        local.output()
    );
    // Exactly one dead-letter object, though the failure record may also
    // hold later events of the batch (retries restart at the lowest failed
    // record): those were processed and are not dead-lettered.
    let s3 = support::s3_client(&env.sdk().await);
    let rec = s3
        .get_object()
        .bucket(bucket("dlq"))
        .key(&failure_records[0])
        .send()
        .await
        .unwrap();
    let rec: Value =
        serde_json::from_slice(&rec.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(rec["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(rec["requestContext"]["approximateInvokeCount"], 4);
    // The emulator does not enforce IAM: check here that the functions used
    // no item-level DynamoDB action their roles lack. The roles grant
    // PutItem (receiver) and UpdateItem (processor, dead-letter handler).
    let item_ops: std::collections::BTreeSet<String> = env
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.service == "dynamodb" && c.operation.contains("Item"))
        .map(|c| c.operation)
        .collect();
    let granted: std::collections::BTreeSet<String> =
        ["PutItem", "UpdateItem"].map(String::from).into();
    assert!(item_ops.is_subset(&granted), "{item_ops:?}");
    let payload: Value = serde_json::from_str(rec["payload"].as_str().unwrap()).unwrap();
    let given_up: Vec<&str> = payload["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dynamodb"]["NewImage"]["eventId"]["S"].as_str().unwrap())
        .collect();
    assert_eq!(given_up.first(), Some(&"evt_dlq_bad"), "{given_up:?}");
    assert_eq!(local.interrupt(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_local_mid_batch_loses_no_event() {
    let env = Env::start("kil");
    // Each archive write takes 300 ms: a batch of 10 takes 3 s.
    env.proxy.add_rule(Rule::delay(
        Matcher::custom(|r| r.method == "PUT" && r.path_and_query.contains("/events/")),
        Duration::from_millis(300),
    ));
    let mut local = Local::start(&env, &["--signing-secret-env", "WH_SECRET"]);
    let key = Local::api_key(&env);
    let ids: Vec<String> = (0..15).map(|i| format!("evt_kil_{i:02}")).collect();
    for id in &ids {
        assert_eq!(signed_post(&local, &key, id).0, 200);
    }
    // Kill it (SIGKILL: no chance to save anything) once some, not all,
    // events are processed.
    wait_until(
        "a first processed event",
        Duration::from_secs(60),
        || async {
            for id in &ids {
                if status(&env, "kil", id).await.as_deref() == Some("processed") {
                    return true;
                }
            }
            false
        },
    )
    .await;
    local.child.kill().unwrap();
    local.child.wait().unwrap();
    let mut done = 0;
    for id in &ids {
        if status(&env, "kil", id).await.as_deref() == Some("processed") {
            done += 1;
        }
    }
    assert!(
        done < ids.len(),
        "all {done} were processed before the kill: the test proves nothing"
    );
    let before = local.output();

    env.proxy.clear_rules();
    let mut again = Local::start(&env, &["--signing-secret-env", "WH_SECRET"]);
    for id in &ids {
        wait_until(id, Duration::from_secs(60), || async {
            status(&env, "kil", id).await.as_deref() == Some("processed")
        })
        .await;
    }
    let archived = keys(&env, "kil", "events/").await;
    assert_eq!(
        archived.len(),
        ids.len(),
        "{archived:?}\n{before}\n{}",
        again.output()
    );
    assert!(keys(&env, "kil", "dead-letters/").await.is_empty());
    assert_eq!(again.interrupt(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn send_says_what_to_do_when_there_is_nothing_to_send_to() {
    let env = Env::start("non");
    let out = env.run(&["send"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("webhook-deploy up --suffix non"),
        "{out:?}"
    );
    let out = env.run(&["send", "--local"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("webhook-deploy local --suffix non"),
        "{out:?}"
    );
    // A session file left by a killed `local`: named, with what to do.
    std::fs::write(
        env.state_dir().join("non.local-session.json"),
        json!({"pid": 999_999_999u64, "url": "http://127.0.0.1:1/webhook", "region": REGION,
               "tableName": "t", "bucketName": "b", "signature": "none", "apiKeyRequired": false})
        .to_string(),
    )
    .unwrap();
    let out = env.run(&["send", "--local"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("is not running"), "{out:?}");
    assert!(env.proxy.mutating_calls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_timeout_bisects_the_batch_down_to_the_record_that_fails() {
    let env = Env::start("bis");
    // The archive write of one event hangs past the processor's 1 s timeout
    // (then fails, so it never lands late).
    let slow = |r: &support::proxy::RequestInfo| {
        r.method == "PUT"
            && r.path_and_query.contains("/events/")
            && r.path_and_query.contains("evt_bis_slow")
    };
    env.proxy
        .add_rule(Rule::delay(Matcher::custom(slow), Duration::from_secs(3)));
    env.proxy.add_rule(Rule::fail(
        Matcher::custom(slow),
        usize::MAX,
        403,
        "AccessDenied",
        "Access Denied",
    ));
    // First run creates the table and bucket; stop it, write three events
    // at once so the next run reads them as one batch.
    let mut local = Local::start(&env, &["--timeout", "processor=1"]);
    assert_eq!(local.interrupt(), 0);
    let ddb = aws_sdk_dynamodb::Client::new(&env.sdk().await);
    let received_at = chrono_like_now();
    for id in ["evt_bis_ok1", "evt_bis_slow", "evt_bis_ok2"] {
        ddb.put_item()
            .table_name(table("bis"))
            .item("eventId", AttributeValue::S(id.into()))
            .item("status", AttributeValue::S("received".into()))
            .item("receivedAt", AttributeValue::S(received_at.clone()))
            .item(
                "body",
                AttributeValue::B(aws_smithy_types::Blob::new(format!("{{\"id\":\"{id}\"}}"))),
            )
            .send()
            .await
            .unwrap();
    }
    let local = Local::start(&env, &["--timeout", "processor=1"]);
    wait_until(
        "the slow event dead-lettered",
        Duration::from_secs(90),
        || async { status(&env, "bis", "evt_bis_slow").await.as_deref() == Some("failed") },
    )
    .await;
    for id in ["evt_bis_ok1", "evt_bis_ok2"] {
        wait_until(id, Duration::from_secs(30), || async {
            status(&env, "bis", id).await.as_deref() == Some("processed")
        })
        .await;
    }
    let log = local.output();
    assert!(log.contains("Sandbox.Timedout"), "{log}");
    assert!(log.contains("bisecting the batch into 1 + 2"), "{log}");
    let dead = keys(&env, "bis", "dead-letters/").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].ends_with("/evt_bis_slow.json"));
    let archived = keys(&env, "bis", "events/").await;
    assert_eq!(archived.len(), 2, "{archived:?}");
}

fn chrono_like_now() -> String {
    chrono::DateTime::from_timestamp(unix_now(), 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
