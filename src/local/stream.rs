//! The table's stream polled the way the stack's event source mapping does
//! it on AWS: INSERT records only, batches of 10, partial batch failures
//! (retry from the lowest failed sequence number), bisect on a function
//! error, at most 3 retries and 6 hours of record age, then the whole
//! failed batch written to the bucket as Lambda's on-failure record
//! (`aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>`)
//! and handed to the dead-letter handler as the S3 notification would.
//!
//! The position per shard is saved after every batch, so a restart resumes
//! there; a batch cut short by a kill is read again, which the processor
//! makes harmless (archive overwrite, conditional status update).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use aws_sdk_dynamodbstreams::types::{
    AttributeValue as StreamValue, Record as StreamRecord, ShardIteratorType,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::runtime::{LocalFunction, Outcome};
use super::session::{self, StreamCheckpoint};
use super::Logger;

/// The stack's mapping settings: by default the deployed mapping's.
#[derive(Debug, Clone)]
pub struct MappingSettings {
    pub batch_size: usize,
    pub max_retries: u32,
    pub bisect_on_error: bool,
    pub max_record_age: Duration,
}

impl Default for MappingSettings {
    fn default() -> Self {
        use crate::resources::event_source_mapping as deployed;
        Self {
            batch_size: deployed::BATCH_SIZE as usize,
            max_retries: deployed::MAX_RETRIES as u32,
            bisect_on_error: deployed::BISECT_ON_ERROR,
            max_record_age: Duration::from_secs(deployed::MAX_RECORD_AGE_S as u64),
        }
    }
}

pub struct Poller {
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub s3: aws_sdk_s3::Client,
    pub region: String,
    pub stream_arn: String,
    pub bucket: String,
    pub bucket_arn: String,
    pub processor: Arc<LocalFunction>,
    pub dead_letter: Arc<LocalFunction>,
    pub settings: MappingSettings,
    pub checkpoint_path: PathBuf,
    pub log: Logger,
    /// Set by Ctrl-C: finish the batch in hand, save, stop.
    pub stop: Arc<AtomicBool>,
}

/// One record as the function receives it, with what the poller needs.
#[derive(Debug, Clone)]
struct Rec {
    json: Value,
    seq: String,
    insert: bool,
    created: Option<i64>,
}

enum Verdict {
    Done,
    /// Records from this index on failed (partial batch response).
    FailedFrom(usize, String),
    /// The whole invocation failed.
    Failed(String),
}

impl Poller {
    pub async fn run(self) -> Result<()> {
        let mut cp =
            session::read_json::<StreamCheckpoint>(&self.checkpoint_path)?.unwrap_or_default();
        if cp.mapping_uuid.is_empty() {
            cp.mapping_uuid = uuid::Uuid::new_v4().to_string();
        }
        if cp.stream_arn != self.stream_arn {
            // A new stream (the table was re-created): positions of the old
            // one mean nothing.
            cp.stream_arn = self.stream_arn.clone();
            cp.shards.clear();
        }
        session::write_json(&self.checkpoint_path, &cp, 0o644)?;
        let mut iterators: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut backoff = Duration::from_millis(250);
        while !self.stop.load(Ordering::SeqCst) {
            match self.poll_once(&mut cp, &mut iterators).await {
                Ok(true) => backoff = Duration::from_millis(250),
                Ok(false) => tokio::time::sleep(Duration::from_millis(250)).await,
                Err(e) => {
                    (self.log)("stream", &format!("polling failed, retrying: {e:#}"));
                    iterators.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        Ok(())
    }

    /// One round over the shards; `true` if records were handled.
    async fn poll_once(
        &self,
        cp: &mut StreamCheckpoint,
        iterators: &mut BTreeMap<String, Option<String>>,
    ) -> Result<bool> {
        if iterators.is_empty() {
            let d = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .send()
                .await
                .map_err(|e| anyhow!("dynamodb:DescribeStream: {}", DisplayErrorContext(&e)))?;
            for shard in d
                .stream_description()
                .map(|s| s.shards())
                .unwrap_or_default()
            {
                let Some(id) = shard.shard_id() else { continue };
                let it = self.iterator(id, cp.shards.get(id)).await?;
                iterators.insert(id.to_string(), Some(it));
            }
        }
        let mut any = false;
        for (shard, it) in iterators.iter_mut() {
            let Some(current) = it.clone() else { continue };
            let out = self
                .streams
                .get_records()
                .shard_iterator(&current)
                .limit(100)
                .send()
                .await
                .map_err(|e| anyhow!("dynamodb:GetRecords: {}", DisplayErrorContext(&e)))?;
            let recs: Vec<Rec> = out
                .records()
                .iter()
                .map(|r| self.lambda_record(r))
                .collect();
            *it = out.next_shard_iterator().map(String::from);
            if recs.is_empty() {
                continue;
            }
            any = true;
            self.handle_page(cp, shard, recs).await?;
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        Ok(any)
    }

    async fn iterator(&self, shard: &str, after: Option<&String>) -> Result<String> {
        let mut req = self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard);
        req = match after {
            Some(seq) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            // TRIM_HORIZON, as the stack's mapping: nothing written before
            // the first poll is lost.
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = req
            .send()
            .await
            .map_err(|e| anyhow!("dynamodb:GetShardIterator: {}", DisplayErrorContext(&e)))?;
        out.shard_iterator()
            .map(String::from)
            .context("dynamodb:GetShardIterator returned no iterator")
    }

    /// Splits a page into batches of INSERT records (the mapping's filter),
    /// handles each, and saves the position after each.
    async fn handle_page(
        &self,
        cp: &mut StreamCheckpoint,
        shard: &str,
        recs: Vec<Rec>,
    ) -> Result<()> {
        let mut batch: Vec<Rec> = Vec::new();
        let mut last_seq: Option<String> = None;
        for r in recs {
            last_seq = Some(r.seq.clone());
            if r.insert {
                batch.push(r);
            }
            if batch.len() == self.settings.batch_size {
                let b = std::mem::take(&mut batch);
                self.deliver(cp, shard, b).await?;
                self.save(cp, shard, last_seq.as_deref())?;
            }
        }
        if !batch.is_empty() {
            self.deliver(cp, shard, batch).await?;
        }
        self.save(cp, shard, last_seq.as_deref())
    }

    fn save(&self, cp: &mut StreamCheckpoint, shard: &str, seq: Option<&str>) -> Result<()> {
        if let Some(seq) = seq {
            cp.shards.insert(shard.to_string(), seq.to_string());
            session::write_json(&self.checkpoint_path, cp, 0o644)?;
        }
        Ok(())
    }

    /// Invokes the processor until the batch is done or given up on.
    async fn deliver(&self, cp: &StreamCheckpoint, shard: &str, batch: Vec<Rec>) -> Result<()> {
        let now = crate::local::unix_now();
        let max_age = self.settings.max_record_age.as_secs() as i64;
        let (fresh, expired): (Vec<Rec>, Vec<Rec>) = batch
            .into_iter()
            .partition(|r| r.created.is_none_or(|c| now - c <= max_age));
        if !expired.is_empty() {
            self.give_up(cp, shard, &expired, "RecordAgeExceeded", 0, None)
                .await?;
        }
        let mut work: VecDeque<(Vec<Rec>, u32)> = VecDeque::new();
        if !fresh.is_empty() {
            work.push_back((fresh, 0));
        }
        while let Some((batch, retries)) = work.pop_front() {
            let verdict = self.invoke_processor(&batch).await;
            let (rest, error) = match verdict {
                Verdict::Done => continue,
                Verdict::FailedFrom(i, error) => (batch[i..].to_vec(), error),
                Verdict::Failed(error) if self.settings.bisect_on_error && batch.len() > 1 => {
                    // Splitting does not count as a retry (as on AWS).
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    (self.log)(
                        "stream",
                        &format!(
                            "processor failed ({error}); bisecting the batch into {} + {}",
                            first.len(),
                            second.len()
                        ),
                    );
                    work.push_front((second, retries));
                    work.push_front((first, retries));
                    continue;
                }
                Verdict::Failed(error) => (batch, error),
            };
            if retries >= self.settings.max_retries {
                self.give_up(
                    cp,
                    shard,
                    &rest,
                    "RetryAttemptsExhausted",
                    retries + 1,
                    Some(&error),
                )
                .await?;
                continue;
            }
            (self.log)(
                "stream",
                &format!(
                    "{} record(s) failed ({error}); retry {} of {}",
                    rest.len(),
                    retries + 1,
                    self.settings.max_retries
                ),
            );
            tokio::time::sleep(Duration::from_millis(200 << retries.min(4))).await;
            work.push_front((rest, retries + 1));
        }
        Ok(())
    }

    async fn invoke_processor(&self, batch: &[Rec]) -> Verdict {
        let event = json!({ "Records": batch.iter().map(|r| r.json.clone()).collect::<Vec<_>>() });
        match self.processor.invoke(event.to_string().as_bytes()).await {
            Err(e) => Verdict::Failed(format!("{e:#}")),
            Ok(Outcome::Error {
                error_type,
                message,
            }) => Verdict::Failed(format!("{error_type}: {message}")),
            Ok(Outcome::Response(payload)) => partial_failures(&payload, batch),
        }
    }

    /// Writes Lambda's on-failure record for `recs` to the bucket and hands
    /// it to the dead-letter handler (the S3 notification on AWS).
    async fn give_up(
        &self,
        cp: &StreamCheckpoint,
        shard: &str,
        recs: &[Rec],
        condition: &str,
        invoke_count: u32,
        error: Option<&str>,
    ) -> Result<()> {
        let now = crate::local::unix_now();
        let ts = chrono_like(now);
        let key = format!(
            "{}{shard}/{}/{}-{}",
            crate::layout::failure_record_prefix_for_mapping(&cp.mapping_uuid),
            date_path(now),
            ts.replace(':', ".").trim_end_matches('Z'),
            uuid::Uuid::new_v4()
        );
        let first = recs.first().map(|r| r.seq.clone()).unwrap_or_default();
        let last = recs.last().map(|r| r.seq.clone()).unwrap_or_default();
        let arrival = |r: Option<&Rec>| {
            r.and_then(|r| r.created)
                .map(chrono_like)
                .map(Value::String)
                .unwrap_or(Value::Null)
        };
        let payload = json!({ "Records": recs.iter().map(|r| r.json.clone()).collect::<Vec<_>>() });
        let record = json!({
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": self.processor.spec().arn,
                "condition": condition,
                "approximateInvokeCount": invoke_count,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": if error.is_some() { "Unhandled" } else { "" },
            },
            "version": "1.0",
            "timestamp": ts,
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": first,
                "endSequenceNumber": last,
                "approximateArrivalOfFirstRecord": arrival(recs.first()),
                "approximateArrivalOfLastRecord": arrival(recs.last()),
                "batchSize": recs.len(),
                "streamArn": self.stream_arn,
            },
            "payload": payload.to_string(),
        });
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(record.to_string().into_bytes().into())
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "writing the on-failure record {key} failed: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        (self.log)(
            "stream",
            &format!(
                "{} record(s) given up ({condition}); on-failure record s3://{}/{key}",
                recs.len(),
                self.bucket
            ),
        );
        self.notify_dead_letter(&key, record.to_string().len(), now)
            .await;
        Ok(())
    }

    /// The S3 event notification, invoked asynchronously on AWS: an error is
    /// retried twice, then left in the log.
    async fn notify_dead_letter(&self, key: &str, size: usize, now: i64) {
        let event = json!({ "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": self.region,
            "eventTime": chrono_like(now),
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "AWS:local" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": { "x-amz-request-id": "local", "x-amz-id-2": "local" },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "failure-records",
                "bucket": {
                    "name": self.bucket,
                    "ownerIdentity": { "principalId": "local" },
                    "arn": self.bucket_arn,
                },
                "object": {
                    "key": urlencoding::encode(key).replace("%2F", "/"),
                    "size": size,
                    "sequencer": "0",
                },
            },
        }]});
        for attempt in 1..=3 {
            match self.dead_letter.invoke(event.to_string().as_bytes()).await {
                Ok(Outcome::Response(_)) => return,
                Ok(Outcome::Error {
                    error_type,
                    message,
                }) => (self.log)(
                    "stream",
                    &format!("dead-letter handler failed (attempt {attempt} of 3): {error_type}: {message}"),
                ),
                Err(e) => (self.log)(
                    "stream",
                    &format!("dead-letter handler not invoked (attempt {attempt} of 3): {e:#}"),
                ),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The record as Lambda delivers it: the stream record's fields plus
    /// `eventSourceARN`, attribute values in DynamoDB JSON.
    fn lambda_record(&self, r: &StreamRecord) -> Rec {
        let d = r.dynamodb();
        let seq = d
            .and_then(|d| d.sequence_number())
            .unwrap_or_default()
            .to_string();
        let created = d
            .and_then(|d| d.approximate_creation_date_time())
            .map(|t| t.secs());
        let image = |m: Option<&std::collections::HashMap<String, StreamValue>>| {
            m.map(|m| {
                Value::Object(
                    m.iter()
                        .map(|(k, v)| (k.clone(), attribute_json(v)))
                        .collect::<Map<_, _>>(),
                )
            })
        };
        let mut dynamodb = Map::new();
        if let Some(t) = created {
            dynamodb.insert("ApproximateCreationDateTime".into(), json!(t));
        }
        if let Some(k) = image(d.and_then(|d| d.keys())) {
            dynamodb.insert("Keys".into(), k);
        }
        if let Some(n) = image(d.and_then(|d| d.new_image())) {
            dynamodb.insert("NewImage".into(), n);
        }
        if let Some(o) = image(d.and_then(|d| d.old_image())) {
            dynamodb.insert("OldImage".into(), o);
        }
        dynamodb.insert("SequenceNumber".into(), json!(seq));
        if let Some(s) = d.and_then(|d| d.size_bytes()) {
            dynamodb.insert("SizeBytes".into(), json!(s));
        }
        if let Some(v) = d.and_then(|d| d.stream_view_type()) {
            dynamodb.insert("StreamViewType".into(), json!(v.as_str()));
        }
        let name = r.event_name().map(|n| n.as_str().to_string());
        Rec {
            insert: name.as_deref() == Some("INSERT"),
            json: json!({
                "eventID": r.event_id(),
                "eventName": name,
                "eventVersion": r.event_version().unwrap_or("1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": self.region,
                "dynamodb": dynamodb,
                "eventSourceARN": self.stream_arn,
            }),
            seq,
            created,
        }
    }
}

/// Reads a partial batch response: records from the lowest failed sequence
/// number on are retried; an identifier not in the batch fails it all (as
/// Lambda does).
fn partial_failures(payload: &[u8], batch: &[Rec]) -> Verdict {
    let v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let ids: Vec<&str> = v
        .get("batchItemFailures")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .map(|f| {
                    f.get("itemIdentifier")
                        .and_then(|i| i.as_str())
                        .unwrap_or("")
                })
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return Verdict::Done;
    }
    let mut lowest: Option<usize> = None;
    for id in &ids {
        match batch.iter().position(|r| r.seq == *id) {
            Some(i) => lowest = Some(lowest.map_or(i, |l| l.min(i))),
            None => {
                return Verdict::Failed(format!(
                    "partial batch response names {id:?}, not a record of the batch"
                ))
            }
        }
    }
    let i = lowest.unwrap_or(0);
    Verdict::FailedFrom(i, format!("{} record(s) reported failed", ids.len()))
}

/// DynamoDB JSON of one attribute value (`{"S": ".."}`, `{"B": "<base64>"}`…).
pub fn attribute_json(v: &StreamValue) -> Value {
    let b64 = |b: &aws_smithy_types::Blob| {
        Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()))
    };
    match v {
        StreamValue::S(s) => json!({ "S": s }),
        StreamValue::N(n) => json!({ "N": n }),
        StreamValue::B(b) => json!({ "B": b64(b) }),
        StreamValue::Bool(b) => json!({ "BOOL": b }),
        StreamValue::Null(_) => json!({ "NULL": true }),
        StreamValue::Ss(v) => json!({ "SS": v }),
        StreamValue::Ns(v) => json!({ "NS": v }),
        StreamValue::Bs(v) => json!({ "BS": v.iter().map(b64).collect::<Vec<_>>() }),
        StreamValue::L(v) => json!({ "L": v.iter().map(attribute_json).collect::<Vec<_>>() }),
        StreamValue::M(m) => json!({
            "M": m.iter().map(|(k, v)| (k.clone(), attribute_json(v))).collect::<Map<_, _>>()
        }),
        _ => json!({ "NULL": true }),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn chrono_like(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn date_path(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y/%m/%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: &str) -> Rec {
        Rec {
            json: json!({}),
            seq: seq.into(),
            insert: true,
            created: None,
        }
    }

    #[test]
    fn partial_batch_responses_retry_from_the_lowest_failure() {
        let batch = [rec("1"), rec("2"), rec("3")];
        let v = |p: &str| partial_failures(p.as_bytes(), &batch);
        assert!(matches!(v(r#"{"batchItemFailures":[]}"#), Verdict::Done));
        assert!(matches!(v("null"), Verdict::Done));
        assert!(matches!(
            v(r#"{"batchItemFailures":[{"itemIdentifier":"3"},{"itemIdentifier":"2"}]}"#),
            Verdict::FailedFrom(1, _)
        ));
        assert!(matches!(
            v(r#"{"batchItemFailures":[{"itemIdentifier":"9"}]}"#),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn attribute_values_become_dynamodb_json() {
        let v = StreamValue::M(std::collections::HashMap::from([(
            "b".to_string(),
            StreamValue::B(aws_smithy_types::Blob::new(b"hi".to_vec())),
        )]));
        assert_eq!(attribute_json(&v), json!({"M": {"b": {"B": "aGk="}}}));
        assert_eq!(
            attribute_json(&StreamValue::Bool(true)),
            json!({"BOOL": true})
        );
    }

    #[test]
    fn failure_record_times_use_the_documented_shapes() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(date_path(1_767_225_600), "2026/01/01");
    }
}
