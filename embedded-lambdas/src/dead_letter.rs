//! Dead-letter handler: S3 notification of a stream mapping's on-failure
//! record → one object per failed event, status `failed`, EMF metric.
//!
//! Failure record shape (Lambda Developer Guide, "Example Amazon S3
//! invocation record" for DynamoDB): `requestContext`, `responseContext`,
//! `version`, `timestamp`, `DDBStreamBatchInfo`, and `payload`, the original
//! invocation event as an escaped JSON string.

use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::s3::S3Event;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::layout;
use crate::processor::StoredEvent;
use crate::util;

#[derive(Debug, Clone)]
pub struct DeadLetterConfig {
    pub table_name: String,
    pub bucket_name: String,
    /// Dimension of the EMF metric (Lambda sets `AWS_LAMBDA_FUNCTION_NAME`).
    pub function_name: String,
}

impl DeadLetterConfig {
    pub fn from_env() -> Result<Self, String> {
        Ok(Self {
            table_name: util::env_required("TABLE_NAME")?,
            bucket_name: util::env_required("BUCKET_NAME")?,
            function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|_| "dead-letter-handler".into()),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureRecord {
    #[serde(default)]
    request_context: Value,
    #[serde(default)]
    response_context: Value,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(rename = "DDBStreamBatchInfo", default)]
    batch_info: Value,
    payload: String,
}

/// A failure record reduced to what the handler writes.
#[derive(Debug)]
pub struct ParsedFailure {
    pub failed_at: Option<i64>,
    pub metadata: Value,
    pub events: Vec<StoredEvent>,
    /// Records in the payload that did not carry an event (kept via `unparsed/`).
    pub uninterpretable: usize,
}

/// Parses a failure record document; `None` if it is not one.
pub fn parse_failure_record(bytes: &[u8]) -> Option<ParsedFailure> {
    let rec: FailureRecord = serde_json::from_slice(bytes).ok()?;
    let payload: StreamEvent = serde_json::from_str(&rec.payload).ok()?;
    let mut events = Vec::new();
    let mut uninterpretable = 0;
    for r in &payload.records {
        match StoredEvent::from_record(r) {
            Some(e) if util::valid_event_id(&e.event_id) => events.push(e),
            _ => uninterpretable += 1,
        }
    }
    let pick = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let metadata = json!({
        "condition": pick(&rec.request_context, "condition"),
        "approximateInvokeCount": pick(&rec.request_context, "approximateInvokeCount"),
        "functionError": pick(&rec.response_context, "functionError"),
        "timestamp": rec.timestamp,
        "shardId": pick(&rec.batch_info, "shardId"),
        "startSequenceNumber": pick(&rec.batch_info, "startSequenceNumber"),
        "endSequenceNumber": pick(&rec.batch_info, "endSequenceNumber"),
        "streamArn": pick(&rec.batch_info, "streamArn"),
    });
    Some(ParsedFailure {
        failed_at: rec.timestamp.as_deref().and_then(util::parse_rfc3339),
        metadata,
        events,
        uninterpretable,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub dead_lettered: usize,
    pub unparsed: usize,
    pub ignored: usize,
    /// Events in a failure record that were processed after all: a stream
    /// retry restarts at the lowest failed record, so a failure record also
    /// holds the later records of its batch, which may have succeeded.
    pub already_processed: usize,
    /// Events an earlier delivery of the same notification already marked
    /// `failed`: their objects are written again, but not counted again.
    pub written_again: usize,
}

/// Handles one S3 notification. Returns an error (so Lambda retries the
/// asynchronous invocation) when a read or write failed; every step is
/// idempotent, so a retry is harmless.
pub async fn handle(
    cfg: &DeadLetterConfig,
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    event: &S3Event,
    now: i64,
) -> Result<Summary, String> {
    let mut summary = Summary::default();
    let mut errors = Vec::new();
    for rec in &event.records {
        let bucket = rec
            .s3
            .bucket
            .name
            .clone()
            .unwrap_or_else(|| cfg.bucket_name.clone());
        let Some(raw_key) = rec.s3.object.key.as_deref() else {
            summary.ignored += 1;
            continue;
        };
        let key = util::decode_s3_key(raw_key);
        if !key.starts_with(layout::FAILURE_RECORD_PREFIX) {
            tracing::warn!(key = %key, "notification outside the failure prefix ignored");
            summary.ignored += 1;
            continue;
        }
        if let Err(e) = handle_object(cfg, ddb, s3, &bucket, &key, now, &mut summary).await {
            tracing::error!(key = %key, error = %e, "failure record not handled");
            errors.push(e);
        }
    }
    emit_metric(cfg, &summary, now);
    if errors.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{} failure record(s) not handled", errors.len()))
    }
}

async fn handle_object(
    cfg: &DeadLetterConfig,
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    now: i64,
    summary: &mut Summary,
) -> Result<(), String> {
    let obj = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("read: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))?;
    let bytes = obj
        .body
        .collect()
        .await
        .map_err(|e| format!("read body: {e}"))?
        .into_bytes();

    let parsed = parse_failure_record(&bytes);
    let keep_whole_record = match &parsed {
        None => true,
        Some(p) => p.uninterpretable > 0 || p.events.is_empty(),
    };
    if keep_whole_record {
        // Never drop what we cannot read: keep the exact bytes for a human.
        let dest = format!("{}{key}", layout::UNPARSED_PREFIX);
        put(s3, &cfg.bucket_name, &dest, bytes.to_vec()).await?;
        tracing::warn!(key = %key, dest = %dest, "failure record kept unparsed");
        summary.unparsed += 1;
    }
    let Some(parsed) = parsed else {
        return Ok(());
    };
    let failed_at = parsed.failed_at.unwrap_or(now);
    for ev in &parsed.events {
        let dest = util::dated_key(layout::DEAD_LETTER_PREFIX, failed_at, &ev.event_id);
        // Status first: an event that was processed is not dead-lettered.
        // `failed` stays claimable, so a retried notification writes the
        // object it may have missed. The event counts once its object is
        // written (`deadLetteredAt`), so a delivery that claimed it but
        // failed before the write leaves it to be counted by the next one.
        let claim = mark_failed(cfg, ddb, &ev.event_id, &dest, now).await?;
        if claim == Claim::Processed {
            tracing::info!(event_id = %ev.event_id, "in a failure record but processed: not dead-lettered");
            summary.already_processed += 1;
            continue;
        }
        let doc = dead_letter_document(ev, &parsed.metadata, key);
        put(s3, &cfg.bucket_name, &dest, doc.to_string().into_bytes()).await?;
        // Of two deliveries of one record at once, only one sets the mark
        // and counts the event.
        let first = claim == Claim::First && mark_written(cfg, ddb, &ev.event_id, now).await?;
        if first {
            tracing::warn!(event_id = %ev.event_id, dest = %dest, "event dead-lettered");
            summary.dead_lettered += 1;
        } else {
            tracing::info!(event_id = %ev.event_id, dest = %dest, "dead-letter object written again");
            summary.written_again += 1;
        }
    }
    Ok(())
}

/// The object written per failed event: failure metadata plus the raw body
/// (as text when it is UTF-8, else base64, so it stays byte-exact).
pub fn dead_letter_document(ev: &StoredEvent, metadata: &Value, source_key: &str) -> Value {
    let mut doc = json!({
        "eventId": ev.event_id,
        "receivedAt": ev.received_at.map(util::rfc3339),
        "failure": metadata,
        "failureRecordKey": source_key,
    });
    match std::str::from_utf8(&ev.body) {
        Ok(text) => doc["body"] = Value::String(text.to_owned()),
        Err(_) => {
            doc["bodyBase64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&ev.body))
        }
    }
    doc
}

async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("write: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

/// What marking an event `failed` found.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// It was `received`, or `failed` by a delivery that did not get to
    /// write its object (or its item is gone): dead-letter and count it.
    First,
    /// An earlier delivery wrote its object already.
    Again,
    /// It was processed after all: nothing to dead-letter.
    Processed,
}

/// Marks the event `failed` unless it was processed. An item that is gone
/// (expired) is not re-created, but its event is still dead-lettered.
/// The old status comes back with the answer, so the role needs no
/// `dynamodb:GetItem` (it has UpdateItem only).
async fn mark_failed(
    cfg: &DeadLetterConfig,
    ddb: &aws_sdk_dynamodb::Client,
    event_id: &str,
    dest: &str,
    now: i64,
) -> Result<Claim, String> {
    let result = ddb
        .update_item()
        .table_name(&cfg.table_name)
        .key("eventId", AttributeValue::S(event_id.to_owned()))
        .update_expression("SET #s = :failed, failedAt = :now, deadLetterKey = :key")
        .condition_expression("#s IN (:received, :failed)")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":failed", AttributeValue::S("failed".into()))
        .expression_attribute_values(":received", AttributeValue::S("received".into()))
        .expression_attribute_values(":now", AttributeValue::S(util::rfc3339(now)))
        .expression_attribute_values(":key", AttributeValue::S(dest.to_owned()))
        .return_values(ReturnValue::AllOld)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    let status = |item: Option<&std::collections::HashMap<String, AttributeValue>>| {
        item.and_then(|i| i.get("status"))
            .and_then(|s| s.as_s().ok())
            .cloned()
    };
    match result {
        Ok(out) => Ok(
            match out.attributes().filter(|i| i.contains_key(WRITTEN_AT)) {
                Some(_) => Claim::Again,
                None => Claim::First,
            },
        ),
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                Ok(match status(c.item()).as_deref() {
                    Some("processed") => Claim::Processed,
                    _ => Claim::First,
                })
            }
            _ => Err(format!(
                "status update: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )),
        },
    }
}

/// Set on an event's item once its dead-letter object is written.
const WRITTEN_AT: &str = "deadLetteredAt";

/// Records that the event's dead-letter object is written; true when this
/// call set the mark (the event counts now), false when another delivery
/// had. An item that is gone (expired) is not re-created, and its event
/// counts.
async fn mark_written(
    cfg: &DeadLetterConfig,
    ddb: &aws_sdk_dynamodb::Client,
    event_id: &str,
    now: i64,
) -> Result<bool, String> {
    let result = ddb
        .update_item()
        .table_name(&cfg.table_name)
        .key("eventId", AttributeValue::S(event_id.to_owned()))
        .update_expression("SET #w = :now")
        .condition_expression("attribute_exists(eventId) AND attribute_not_exists(#w)")
        .expression_attribute_names("#w", WRITTEN_AT)
        .expression_attribute_values(":now", AttributeValue::S(util::rfc3339(now)))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                Ok(c.item().is_none_or(|i| !i.contains_key(WRITTEN_AT)))
            }
            _ => Err(format!(
                "written mark: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&e)
            )),
        },
    }
}

/// CloudWatch embedded metric format line (one JSON object on stdout).
pub fn metric_line(cfg: &DeadLetterConfig, summary: &Summary, now: i64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now * 1000,
            "CloudWatchMetrics": [{
                "Namespace": layout::METRIC_NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": [{ "Name": layout::DEAD_LETTER_METRIC, "Unit": "Count" }],
            }],
        },
        "FunctionName": cfg.function_name,
        (layout::DEAD_LETTER_METRIC): summary.dead_lettered + summary.unparsed,
    })
}

fn emit_metric(cfg: &DeadLetterConfig, summary: &Summary, now: i64) {
    // Printed raw (not through tracing) so CloudWatch sees the EMF object itself.
    println!("{}", metric_line(cfg, summary, now));
}
