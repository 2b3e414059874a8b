//! The three handlers against moto (DynamoDB, DynamoDB Streams, S3), called
//! directly with SDK clients; no Lambda runtime, no Docker.

#[allow(dead_code)]
#[path = "../../tests/support/moto.rs"]
mod moto;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::encodings::Body;
use aws_lambda_events::s3::S3Event;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use base64::Engine as _;
use embedded_lambdas::dead_letter::{self, DeadLetterConfig};
use embedded_lambdas::processor::{self, ProcessorConfig};
use embedded_lambdas::receiver::{self, ReceiverConfig};
use embedded_lambdas::signature::{hmac_sha256, Scheme, Verifier};
use embedded_lambdas::{layout, util};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TABLE: &str = "webhook-events-test";
const BUCKET: &str = "webhook-archive-test";

struct Env {
    // Keeps the server alive for the test's duration.
    _moto: moto::Moto,
    endpoint: String,
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
}

/// The `X-Amz-Target` operation of every DynamoDB request a client sends.
#[derive(Debug, Clone, Default)]
struct Targets(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl aws_sdk_dynamodb::config::Intercept for Targets {
    fn name(&self) -> &'static str {
        "Targets"
    }
    fn read_before_transmit(
        &self,
        ctx: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_dynamodb::config::RuntimeComponents,
        _: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Some(t) = ctx.request().headers().get("x-amz-target") {
            let op = t.rsplit('.').next().unwrap_or(t).to_string();
            self.0.lock().unwrap().push(op);
        }
        Ok(())
    }
}

/// A DynamoDB client for `env` that records the operations it calls.
async fn recording_dynamodb(env: &Env) -> (aws_sdk_dynamodb::Client, Targets) {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(&env.endpoint)
        .load()
        .await;
    let targets = Targets::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&conf)
            .interceptor(targets.clone())
            .build(),
    );
    (client, targets)
}

async fn env() -> Env {
    let moto = moto::Moto::start();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    // The same constructors the functions use (path-style S3 with an endpoint).
    let ddb = util::dynamodb_client(&conf);
    let s3 = util::s3_client(&conf);
    Env {
        endpoint: moto.endpoint.clone(),
        _moto: moto,
        ddb,
        s3,
    }
}

impl Env {
    async fn create_table(&self) {
        self.ddb
            .create_table()
            .table_name(TABLE)
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
    }

    async fn create_bucket(&self) {
        self.s3.create_bucket().bucket(BUCKET).send().await.unwrap();
    }

    async fn item(&self, id: &str) -> Option<std::collections::HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(TABLE)
            .key("eventId", AttributeValue::S(id.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    async fn item_count(&self) -> usize {
        self.ddb
            .scan()
            .table_name(TABLE)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
            .len()
    }

    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.unwrap().into_bytes().to_vec())
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .unwrap()
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.key)
            .collect()
    }

    /// Every record of the table's stream, shaped as Lambda's stream event.
    /// The DynamoDB Streams wire format is Lambda's record format minus
    /// `eventSourceARN`, so the records are wrapped as they come.
    fn stream_event(&self) -> StreamEvent {
        let table = self.streams_call(
            "DescribeTable",
            &json!({ "TableName": TABLE }),
            "DynamoDB_20120810",
        );
        let arn = table["Table"]["LatestStreamArn"]
            .as_str()
            .unwrap()
            .to_owned();
        let desc = self.streams_call(
            "DescribeStream",
            &json!({ "StreamArn": arn }),
            "DynamoDBStreams_20120810",
        );
        let mut records = Vec::new();
        for shard in desc["StreamDescription"]["Shards"].as_array().unwrap() {
            let it = self.streams_call(
                "GetShardIterator",
                &json!({ "StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON" }),
                "DynamoDBStreams_20120810",
            );
            let got = self.streams_call(
                "GetRecords",
                &json!({ "ShardIterator": it["ShardIterator"] }),
                "DynamoDBStreams_20120810",
            );
            for mut r in got["Records"].as_array().cloned().unwrap_or_default() {
                r["eventSourceARN"] = Value::String(arn.clone());
                records.push(r);
            }
        }
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    /// Minimal JSON-protocol call (no aws-sdk-dynamodbstreams crate needed;
    /// moto routes on `X-Amz-Target` and does not check signatures).
    fn streams_call(&self, op: &str, body: &Value, prefix: &str) -> Value {
        let authority = self.endpoint.trim_start_matches("http://").to_owned();
        let body = body.to_string();
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {authority}\r\nX-Amz-Target: {prefix}.{op}\r\n\
             Content-Type: application/x-amz-json-1.0\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut s = TcpStream::connect(&authority).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8(resp).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{op}: {head}\n{body}");
        serde_json::from_str(body).unwrap()
    }
}

fn receiver_config(table: &str) -> ReceiverConfig {
    ReceiverConfig {
        table_name: table.into(),
        verifier: Verifier::new(Scheme::StandardWebhooks, &[SECRET]).unwrap(),
        ttl_days: 90,
        max_body_bytes: receiver::DEFAULT_MAX_BODY_BYTES,
    }
}

/// A Standard Webhooks request signed with `SECRET`.
fn signed_request(id: &str, body: &[u8], now: i64) -> ApiGatewayProxyRequest {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let ts = now.to_string();
    let sig = hmac_sha256(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert("webhook-timestamp", HeaderValue::from_str(&ts).unwrap());
    let sig = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    );
    headers.insert("webhook-signature", HeaderValue::from_str(&sig).unwrap());
    let mut req = ApiGatewayProxyRequest::default();
    req.headers = headers;
    match std::str::from_utf8(body) {
        Ok(text) => req.body = Some(text.to_owned()),
        Err(_) => {
            req.body = Some(base64::engine::general_purpose::STANDARD.encode(body));
            req.is_base64_encoded = true;
        }
    }
    req
}

fn response_json(r: &aws_lambda_events::apigw::ApiGatewayProxyResponse) -> Value {
    match &r.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

const NOW: i64 = 1_767_322_245; // 2026-01-02T02:50:45Z

#[tokio::test]
async fn receiver_stores_byte_exact_and_deduplicates() {
    let env = env().await;
    env.create_table().await;
    let cfg = receiver_config(TABLE);
    // Odd spacing, key order and escapes must survive byte for byte.
    let body =
        "{ \"type\":\"payment.succeeded\",  \"amount\": 1.50,\n \"note\":\"caf\u{e9} \\u00e9\" }";
    let req = signed_request("msg_1", body.as_bytes(), NOW);

    let r = receiver::handle(&cfg, &env.ddb, &req, NOW).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(
        response_json(&r),
        json!({ "eventId": "msg_1", "duplicate": false })
    );

    let item = env.item("msg_1").await.expect("stored");
    assert_eq!(item["body"].as_b().unwrap().as_ref(), body.as_bytes());
    assert_eq!(item["status"].as_s().unwrap(), "received");
    assert_eq!(item["source"].as_s().unwrap(), "standard-webhooks");
    assert_eq!(item["eventType"].as_s().unwrap(), "payment.succeeded");
    assert_eq!(item["receivedAt"].as_s().unwrap(), "2026-01-02T02:50:45Z");
    assert_eq!(
        item["expiresAt"].as_n().unwrap(),
        &(NOW + 90 * 86_400).to_string()
    );

    // Redelivery: 200, flagged duplicate, still one row, original kept.
    let r = receiver::handle(&cfg, &env.ddb, &req, NOW + 30).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(
        response_json(&r),
        json!({ "eventId": "msg_1", "duplicate": true })
    );
    assert_eq!(env.item_count().await, 1);
    let again = env.item("msg_1").await.unwrap();
    assert_eq!(again["receivedAt"], item["receivedAt"]);

    // A base64-encoded (binary media type) body is decoded and stored exactly.
    let bin_body = b"{\"eventId\":\"x\",\"raw\":\"\xff\"}";
    let req = signed_request("msg_bin", bin_body, NOW);
    assert!(req.is_base64_encoded);
    // Not UTF-8, so not JSON: rejected, but only after the signature passed.
    let r = receiver::handle(&cfg, &env.ddb, &req, NOW).await;
    assert_eq!(r.status_code, 400);
    let ok_body = br#"{"k":"v"}"#;
    let mut req = signed_request("msg_b64", ok_body, NOW);
    req.body = Some(base64::engine::general_purpose::STANDARD.encode(ok_body));
    req.is_base64_encoded = true;
    let r = receiver::handle(&cfg, &env.ddb, &req, NOW).await;
    assert_eq!(r.status_code, 200);
    let item = env.item("msg_b64").await.unwrap();
    assert_eq!(item["body"].as_b().unwrap().as_ref(), ok_body);
}

#[tokio::test]
async fn receiver_rejects_bad_input_without_storing() {
    let env = env().await;
    env.create_table().await;
    let mut cfg = receiver_config(TABLE);
    cfg.max_body_bytes = 1024;

    let cases: Vec<(ApiGatewayProxyRequest, i64, Value)> = vec![
        (
            signed_request("m1", b"{not json", NOW),
            400,
            json!({ "error": "malformed JSON" }),
        ),
        (
            signed_request("m2", b"[1,2,3]", NOW),
            400,
            json!({ "error": "payload must be a JSON object" }),
        ),
        (
            signed_request(
                "m3",
                format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)).as_bytes(),
                NOW,
            ),
            413,
            json!({ "error": "payload too large" }),
        ),
        (
            signed_request("m4", b"{}", NOW - 301),
            401,
            json!({ "error": "invalid or missing signature" }),
        ),
        (
            signed_request("../evil", b"{}", NOW),
            400,
            json!({ "error": "invalid event id" }),
        ),
        (
            {
                let mut r = signed_request("m5", b"{\"a\":1}", NOW);
                r.body = Some("{\"a\":2}".into()); // tampered
                r
            },
            401,
            json!({ "error": "invalid or missing signature" }),
        ),
        (
            {
                let mut r = signed_request("m6", b"{}", NOW);
                r.headers.remove("webhook-signature");
                r
            },
            401,
            json!({ "error": "invalid or missing signature" }),
        ),
    ];
    for (i, (req, status, body)) in cases.iter().enumerate() {
        let r = receiver::handle(&cfg, &env.ddb, req, NOW).await;
        assert_eq!(r.status_code, *status, "case {i}");
        assert_eq!(&response_json(&r), body, "case {i}");
    }
    assert_eq!(env.item_count().await, 0);
}

#[tokio::test]
async fn receiver_storage_failure_is_500_without_internals() {
    let env = env().await;
    // No table: PutItem fails with ResourceNotFoundException.
    let cfg = receiver_config("no-such-table");
    let r = receiver::handle(&cfg, &env.ddb, &signed_request("m1", b"{}", NOW), NOW).await;
    assert_eq!(r.status_code, 500);
    let text = match &r.body {
        Some(Body::Text(t)) => t.clone(),
        _ => panic!(),
    };
    assert_eq!(text, r#"{"error":"internal error, retry later"}"#);
}

async fn store_events(env: &Env, ids: &[&str]) {
    let cfg = receiver_config(TABLE);
    for id in ids {
        let body = format!("{{\"id\":\"{id}\", \"n\": 1 }}");
        let r = receiver::handle(
            &cfg,
            &env.ddb,
            &signed_request(id, body.as_bytes(), NOW),
            NOW,
        )
        .await;
        assert_eq!(r.status_code, 200);
    }
}

#[tokio::test]
async fn processor_archives_marks_processed_and_is_idempotent() {
    let env = env().await;
    env.create_table().await;
    env.create_bucket().await;
    store_events(&env, &["evt_a", "evt_b"]).await;
    // An item without a body (written by something else): its record must fail
    // alone and be reported, while the others are processed.
    env.ddb
        .put_item()
        .table_name(TABLE)
        .item("eventId", AttributeValue::S("evt_broken".into()))
        .item("status", AttributeValue::S("received".into()))
        .send()
        .await
        .unwrap();
    let cfg = ProcessorConfig {
        table_name: TABLE.into(),
        bucket_name: BUCKET.into(),
    };
    let batch = env.stream_event();
    assert_eq!(batch.records.len(), 3);

    let resp = processor::handle(&cfg, &env.ddb, &env.s3, &batch).await;
    let broken_seq = batch.records[2].change.sequence_number.clone();
    let failed: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![broken_seq]);

    for id in ["evt_a", "evt_b"] {
        let item = env.item(id).await.unwrap();
        assert_eq!(item["status"].as_s().unwrap(), "processed");
        let key = format!("events/2026/01/02/{id}.json");
        assert_eq!(item["archiveKey"].as_s().unwrap(), &key);
        let archived = env.object(&key).await.expect("archived");
        assert_eq!(archived, item["body"].as_b().unwrap().as_ref());
    }
    assert_eq!(env.keys(layout::EVENTS_PREFIX).await.len(), 2);

    // Same batch again (a retry): nothing changes, no new failures beyond the broken one.
    let before = env.item("evt_a").await.unwrap();
    let resp = processor::handle(&cfg, &env.ddb, &env.s3, &batch).await;
    assert_eq!(resp.batch_item_failures.len(), 1);
    assert_eq!(env.item("evt_a").await.unwrap(), before);
    assert_eq!(env.keys(layout::EVENTS_PREFIX).await.len(), 2);

    // The stream now also holds our own MODIFY records: they are skipped.
    let all = env.stream_event();
    let modifies: Vec<_> = all
        .records
        .iter()
        .filter(|r| r.event_name == "MODIFY")
        .cloned()
        .collect();
    assert!(!modifies.is_empty());
    for r in &modifies {
        assert_eq!(
            processor::process_record(&cfg, &env.ddb, &env.s3, r).await,
            Ok(processor::RecordOutcome::Skipped)
        );
    }

    // S3 failure: every INSERT is reported by sequence number.
    let bad = ProcessorConfig {
        table_name: TABLE.into(),
        bucket_name: "no-such-bucket".into(),
    };
    let resp = processor::handle(&bad, &env.ddb, &env.s3, &batch).await;
    assert_eq!(resp.batch_item_failures.len(), 3);
}

/// A failure record as documented ("Example Amazon S3 invocation record").
fn failure_record(batch: &StreamEvent) -> Vec<u8> {
    let first = batch.records.first().unwrap();
    json!({
        "requestContext": {
            "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:event-processor-test",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled"
        },
        "version": "1.0",
        "timestamp": "2026-01-03T00:13:49.717Z",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-00000001573689847184-864758bb",
            "startSequenceNumber": first.change.sequence_number,
            "endSequenceNumber": batch.records.last().unwrap().change.sequence_number,
            "approximateArrivalOfFirstRecord": "2026-01-02T02:50:45Z",
            "approximateArrivalOfLastRecord": "2026-01-02T02:50:46Z",
            "batchSize": batch.records.len(),
            "streamArn": first.event_source_arn,
        },
        "payload": serde_json::to_string(batch).unwrap(),
    })
    .to_string()
    .into_bytes()
}

fn s3_notification(keys: &[&str]) -> S3Event {
    let records: Vec<Value> = keys
        .iter()
        .map(|k| {
            json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-03T00:13:50.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": { "principalId": "AWS:AROAEXAMPLE" },
                "requestParameters": { "sourceIPAddress": "10.0.0.1" },
                "responseElements": { "x-amz-request-id": "X", "x-amz-id-2": "Y" },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "failure-records",
                    "bucket": {
                        "name": BUCKET,
                        "ownerIdentity": { "principalId": "EXAMPLE" },
                        "arn": format!("arn:aws:s3:::{BUCKET}")
                    },
                    // Notification keys are URL-encoded.
                    "object": { "key": k.replace(' ', "+"), "size": 1, "eTag": "e", "sequencer": "0A" }
                }
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test]
async fn dead_letter_handler_writes_per_event_objects_and_keeps_unparsed() {
    let env = env().await;
    env.create_table().await;
    env.create_bucket().await;
    store_events(&env, &["evt_x", "evt_y", "evt_done"]).await;
    let batch = env.stream_event();
    assert_eq!(batch.records.len(), 3);
    // A later record of the batch that was processed after all (a retry
    // restarts at the lowest failed record): it must not be dead-lettered.
    env.ddb
        .update_item()
        .table_name(TABLE)
        .key("eventId", AttributeValue::S("evt_done".into()))
        .update_expression("SET #s = :p")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":p", AttributeValue::S("processed".into()))
        .send()
        .await
        .unwrap();

    let good_key = "aws/lambda/0e9c1a4e-1111-2222-3333-444455556666/shardId-00000001573689847184-864758bb/2026/01/03/2026-01-03T00.13.49-7a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff";
    let bad_key = "aws/lambda/0e9c1a4e-1111-2222-3333-444455556666/shardId-1/2026/01/03/2026-01-03T00.14.00-garbage";
    for (key, bytes) in [
        (good_key, failure_record(&batch)),
        (bad_key, b"this is not a failure record".to_vec()),
    ] {
        env.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .unwrap();
    }
    let cfg = DeadLetterConfig {
        table_name: TABLE.into(),
        bucket_name: BUCKET.into(),
        function_name: "dead-letter-handler-test".into(),
    };
    let event = s3_notification(&[good_key, bad_key, "events/2026/01/02/other.json"]);
    let (ddb, targets) = recording_dynamodb(&env).await;
    let summary = dead_letter::handle(&cfg, &ddb, &env.s3, &event, NOW + 86_400)
        .await
        .unwrap();
    // Its role grants dynamodb:UpdateItem only (the emulator does not check
    // IAM), and a processed event (evt_done) is the case that once needed a
    // GetItem.
    let used = targets.0.lock().unwrap().clone();
    assert!(used.iter().all(|t| t == "UpdateItem"), "{used:?}");
    // Three claims, and a written mark for each of the two dead-lettered.
    assert_eq!(used.len(), 5, "{used:?}");
    assert_eq!(
        summary,
        dead_letter::Summary {
            dead_lettered: 2,
            unparsed: 1,
            ignored: 1,
            already_processed: 1,
            written_again: 0,
        }
    );
    assert_eq!(
        env.item("evt_done").await.unwrap()["status"]
            .as_s()
            .unwrap(),
        "processed"
    );
    assert!(env
        .object("dead-letters/2026/01/03/evt_done.json")
        .await
        .is_none());

    for id in ["evt_x", "evt_y"] {
        let key = format!("dead-letters/2026/01/03/{id}.json");
        let doc: Value = serde_json::from_slice(&env.object(&key).await.expect("written")).unwrap();
        let item = env.item(id).await.unwrap();
        assert_eq!(doc["eventId"], id);
        assert_eq!(
            doc["body"].as_str().unwrap().as_bytes(),
            item["body"].as_b().unwrap().as_ref()
        );
        assert_eq!(doc["failure"]["condition"], "RetryAttemptsExhausted");
        assert_eq!(doc["failureRecordKey"], good_key);
        assert_eq!(item["status"].as_s().unwrap(), "failed");
        assert_eq!(item["deadLetterKey"].as_s().unwrap(), &key);
        assert!(item.contains_key("deadLetteredAt"), "{item:?}");
    }
    let unparsed = format!("{}{bad_key}", layout::UNPARSED_PREFIX);
    assert_eq!(
        env.object(&unparsed).await.expect("kept"),
        b"this is not a failure record"
    );

    // Redelivered notification: same objects, same statuses, no error, and
    // the two events are not counted (in the metric) a second time.
    let again = dead_letter::handle(&cfg, &env.ddb, &env.s3, &event, NOW + 90_000)
        .await
        .unwrap();
    assert_eq!((again.dead_lettered, again.written_again), (0, 2));
    assert_eq!(again.already_processed, 1);
    assert_eq!(env.keys("dead-letters/2026/").await.len(), 2);

    // A delivery that claimed an event but stopped before writing its
    // object (the write failed, the function timed out) leaves it `failed`
    // without the written mark: the next delivery writes it and counts it,
    // so the alarm still hears of it.
    env.ddb
        .update_item()
        .table_name(TABLE)
        .key("eventId", AttributeValue::S("evt_x".into()))
        .update_expression("REMOVE deadLetteredAt")
        .send()
        .await
        .unwrap();
    let retried = dead_letter::handle(&cfg, &env.ddb, &env.s3, &event, NOW + 95_000)
        .await
        .unwrap();
    assert_eq!((retried.dead_lettered, retried.written_again), (1, 1));
    assert!(env
        .item("evt_x")
        .await
        .unwrap()
        .contains_key("deadLetteredAt"));

    // The same record delivered twice at once: each event counts once
    // across both deliveries, however their calls interleave.
    for id in ["evt_x", "evt_y"] {
        env.ddb
            .update_item()
            .table_name(TABLE)
            .key("eventId", AttributeValue::S(id.into()))
            .update_expression("REMOVE deadLetteredAt")
            .send()
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        dead_letter::handle(&cfg, &env.ddb, &env.s3, &event, NOW + 96_000),
        dead_letter::handle(&cfg, &env.ddb, &env.s3, &event, NOW + 96_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.dead_lettered + b.dead_lettered, 2, "{a:?} {b:?}");
    assert_eq!(a.written_again + b.written_again, 2, "{a:?} {b:?}");

    // EMF line shape.
    let line = dead_letter::metric_line(&cfg, &summary, NOW);
    assert_eq!(line["DeadLetterEvents"], 3);
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "WebhookPipeline"
    );
}

#[tokio::test]
async fn dead_letter_handler_errors_when_record_unreadable() {
    let env = env().await;
    env.create_table().await;
    env.create_bucket().await;
    let cfg = DeadLetterConfig {
        table_name: TABLE.into(),
        bucket_name: BUCKET.into(),
        function_name: "f".into(),
    };
    // The object is gone: an error makes Lambda retry the notification.
    let event = s3_notification(&["aws/lambda/u/s/2026/01/03/missing"]);
    assert!(dead_letter::handle(&cfg, &env.ddb, &env.s3, &event, NOW)
        .await
        .is_err());
}
