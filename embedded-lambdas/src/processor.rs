//! Processor: DynamoDB stream batch → archived raw events, status `processed`.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_dynamo::AttributeValue as StreamValue;

use crate::layout;
use crate::util;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub table_name: String,
    pub bucket_name: String,
}

impl ProcessorConfig {
    pub fn from_env() -> Result<Self, String> {
        Ok(Self {
            table_name: util::env_required("TABLE_NAME")?,
            bucket_name: util::env_required("BUCKET_NAME")?,
        })
    }
}

/// The fields of a stored event the pipeline needs, read from a stream image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_id: String,
    pub body: Vec<u8>,
    pub received_at: Option<i64>,
}

impl StoredEvent {
    /// From a record's NEW_IMAGE; `None` if it lacks the id or the body.
    pub fn from_record(rec: &EventRecord) -> Option<Self> {
        let image = &rec.change.new_image;
        let event_id = match image.get("eventId") {
            Some(StreamValue::S(s)) => s.clone(),
            _ => return None,
        };
        let body = match image.get("body") {
            Some(StreamValue::B(b)) => b.clone(),
            // Tolerate a string body (items written by other tools).
            Some(StreamValue::S(s)) => s.clone().into_bytes(),
            _ => return None,
        };
        let received_at = match image.get("receivedAt") {
            Some(StreamValue::S(s)) => util::parse_rfc3339(s),
            _ => None,
        };
        Some(Self {
            event_id,
            body,
            received_at,
        })
    }

    /// Archive key. Dated by `receivedAt` (else the stream record's creation
    /// time) so a retry of the same record writes the same key.
    pub fn archive_key(&self, fallback_time: i64) -> String {
        util::dated_key(
            layout::EVENTS_PREFIX,
            self.received_at.unwrap_or(fallback_time),
            &self.event_id,
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Not an INSERT: nothing to do (the mapping's filter should prevent these).
    Skipped,
    Processed,
    /// Archived again, but the status was already past `received`.
    AlreadyDone,
}

/// Processes a batch; failed records are reported by sequence number.
/// Every record is attempted; Lambda restarts from the lowest reported
/// sequence number, and re-running a processed record is harmless.
pub async fn handle(
    cfg: &ProcessorConfig,
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    event: &Event,
) -> DynamoDbEventResponse {
    let mut failures = Vec::new();
    for rec in &event.records {
        match process_record(cfg, ddb, s3, rec).await {
            Ok(outcome) => tracing::debug!(outcome = ?outcome, "record done"),
            Err(reason) => {
                tracing::error!(
                    event_id = ?StoredEvent::from_record(rec).map(|e| e.event_id),
                    sequence_number = ?rec.change.sequence_number,
                    reason = %reason,
                    "record failed"
                );
                let mut f = DynamoDbBatchItemFailure::default();
                f.item_identifier = rec.change.sequence_number.clone();
                failures.push(f);
            }
        }
    }
    let mut resp = DynamoDbEventResponse::default();
    resp.batch_item_failures = failures;
    resp
}

pub async fn process_record(
    cfg: &ProcessorConfig,
    ddb: &aws_sdk_dynamodb::Client,
    s3: &aws_sdk_s3::Client,
    rec: &EventRecord,
) -> Result<RecordOutcome, String> {
    // Defensive even with the mapping's INSERT filter: our own status updates
    // are MODIFY records and must never loop back into processing.
    if rec.event_name != "INSERT" {
        return Ok(RecordOutcome::Skipped);
    }
    let ev = StoredEvent::from_record(rec).ok_or("record has no eventId/body in its new image")?;
    let key = ev.archive_key(rec.change.approximate_creation_date_time.timestamp());
    s3.put_object()
        .bucket(&cfg.bucket_name)
        .key(&key)
        .content_type("application/json")
        .body(ev.body.clone().into())
        .send()
        .await
        .map_err(|e| format!("archive: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))?;
    let result = ddb
        .update_item()
        .table_name(&cfg.table_name)
        .key("eventId", AttributeValue::S(ev.event_id.clone()))
        .update_expression("SET #s = :processed, processedAt = :now, archiveKey = :key")
        .condition_expression("#s = :received")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":processed", AttributeValue::S("processed".into()))
        .expression_attribute_values(":received", AttributeValue::S("received".into()))
        .expression_attribute_values(":now", AttributeValue::S(util::rfc3339(util::now_unix())))
        .expression_attribute_values(":key", AttributeValue::S(key))
        .send()
        .await;
    match result {
        Ok(_) => {
            tracing::info!(event_id = %ev.event_id, "event processed");
            Ok(RecordOutcome::Processed)
        }
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(RecordOutcome::AlreadyDone)
        }
        Err(e) => Err(format!(
            "status update: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(&e)
        )),
    }
}
