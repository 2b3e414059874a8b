//! The DynamoDB stream → processor event source mapping.
//!
//! TRIM_HORIZON (LATEST would lose events written before the mapping is
//! enabled), batches of 10, 3 retries with bisection, a bounded record age,
//! partial batch failures, only INSERT events (the processor's own status
//! update must not trigger it again), and failed batches written to the
//! archive bucket (an S3 destination keeps the records; SQS/SNS keep only
//! metadata that expires with the stream).

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::{is_code, retry_iam_propagation, tags_drift};
use crate::stack::{ids, Function};
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_lambda::operation::get_event_source_mapping::GetEventSourceMappingOutput;
use aws_sdk_lambda::types::{
    DestinationConfig, EventSourcePosition, Filter, FilterCriteria, FunctionResponseType, OnFailure,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const BATCH_SIZE: i32 = 10;
pub const MAX_RETRIES: i32 = 3;
/// A failing batch is split in two and retried, down to the failing record.
pub const BISECT_ON_ERROR: bool = true;
/// Well inside the stream's 24-hour retention, so a record that keeps
/// failing reaches the failure destination before the stream drops it.
pub const MAX_RECORD_AGE_S: i32 = 6 * 3600;
pub const STARTING_POSITION: &str = "TRIM_HORIZON";
/// AWS's defaults, made explicit so a change to them is drift: a batching
/// window delays every event, several batches per shard break the
/// per-event order, and a tumbling window changes what the processor gets.
pub const MAX_BATCHING_WINDOW_S: i32 = 0;
pub const PARALLELIZATION_FACTOR: i32 = 1;
pub const TUMBLING_WINDOW_S: i32 = 0;

/// Only new events: the processor's own MODIFY must not re-trigger it.
pub fn filter_pattern() -> Value {
    json!({ "eventName": ["INSERT"] })
}

pub struct StreamMapping {
    id: String,
}

/// The settings we own, in a comparable form.
#[derive(Debug, PartialEq, serde::Serialize)]
struct Settings {
    batch_size: Option<i32>,
    maximum_retry_attempts: Option<i32>,
    bisect_batch_on_function_error: Option<bool>,
    maximum_record_age_in_seconds: Option<i32>,
    maximum_batching_window_in_seconds: i32,
    parallelization_factor: i32,
    tumbling_window_in_seconds: i32,
    function_response_types: Vec<String>,
    filter: Vec<Value>,
    on_failure: Option<String>,
}

impl StreamMapping {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn function(cx: &Cx) -> String {
        cx.stack.function_name(Function::Processor)
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack
            .tags(&self.id, &cx.stack.name("webhook-stream-mapping"))
    }

    fn want(cx: &Cx) -> Settings {
        Settings {
            batch_size: Some(BATCH_SIZE),
            maximum_retry_attempts: Some(MAX_RETRIES),
            bisect_batch_on_function_error: Some(BISECT_ON_ERROR),
            maximum_record_age_in_seconds: Some(MAX_RECORD_AGE_S),
            maximum_batching_window_in_seconds: MAX_BATCHING_WINDOW_S,
            parallelization_factor: PARALLELIZATION_FACTOR,
            tumbling_window_in_seconds: TUMBLING_WINDOW_S,
            function_response_types: vec!["ReportBatchItemFailures".into()],
            filter: vec![filter_pattern()],
            on_failure: Some(cx.stack.bucket_arn()),
        }
    }

    fn have(m: &GetEventSourceMappingOutput) -> Settings {
        Settings {
            batch_size: m.batch_size(),
            maximum_retry_attempts: m.maximum_retry_attempts(),
            bisect_batch_on_function_error: m.bisect_batch_on_function_error(),
            maximum_record_age_in_seconds: m.maximum_record_age_in_seconds(),
            // Absent means AWS's default.
            maximum_batching_window_in_seconds: m
                .maximum_batching_window_in_seconds()
                .unwrap_or(MAX_BATCHING_WINDOW_S),
            parallelization_factor: m.parallelization_factor().unwrap_or(PARALLELIZATION_FACTOR),
            tumbling_window_in_seconds: m.tumbling_window_in_seconds().unwrap_or(TUMBLING_WINDOW_S),
            function_response_types: m
                .function_response_types()
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            filter: m
                .filter_criteria()
                .map(|f| {
                    f.filters()
                        .iter()
                        .map(|p| {
                            let text = p.pattern().unwrap_or_default();
                            serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            on_failure: m
                .destination_config()
                .and_then(|d| d.on_failure())
                .and_then(|o| o.destination())
                .map(str::to_string),
        }
    }

    fn filter_criteria() -> FilterCriteria {
        FilterCriteria::builder()
            .filters(
                Filter::builder()
                    .pattern(filter_pattern().to_string())
                    .build(),
            )
            .build()
    }

    fn destination(cx: &Cx) -> DestinationConfig {
        DestinationConfig::builder()
            .on_failure(
                OnFailure::builder()
                    .destination(cx.stack.bucket_arn())
                    .build(),
            )
            .build()
    }

    /// By recorded UUID, else among the processor's mappings on the table's
    /// stream (the current stream preferred, when known).
    async fn find(
        &self,
        cx: &Cx,
        rec: Option<&Record>,
    ) -> Result<Option<GetEventSourceMappingOutput>> {
        let lambda = &cx.aws.lambda;
        let mut uuid = rec.map(|r| r.physical_id.clone()).filter(|u| !u.is_empty());
        if uuid.is_none() {
            let list = match lambda
                .list_event_source_mappings()
                .function_name(Self::function(cx))
                .send()
                .await
            {
                Ok(l) => l,
                Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(None),
                Err(e) => return Err(e).context("lambda:ListEventSourceMappings failed"),
            };
            let prefix = format!("{}/stream/", cx.stack.table_arn());
            let current = cx.attr(ids::TABLE, "stream_arn").ok();
            let ours: Vec<_> = list
                .event_source_mappings()
                .iter()
                .filter(|m| m.event_source_arn().is_some_and(|a| a.starts_with(&prefix)))
                .collect();
            uuid = ours
                .iter()
                .find(|m| current.is_some() && m.event_source_arn() == current.as_deref())
                .or(ours.first())
                .and_then(|m| m.uuid().map(str::to_string));
        }
        let Some(uuid) = uuid else { return Ok(None) };
        match lambda.get_event_source_mapping().uuid(&uuid).send().await {
            Ok(m) if m.state() == Some("Deleting") => Ok(None),
            Ok(m) => Ok(Some(m)),
            // A stale record: look it up again without it.
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) && rec.is_some() => {
                Box::pin(self.find(cx, None)).await
            }
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(None),
            Err(e) => Err(e).context("lambda:GetEventSourceMapping failed"),
        }
    }

    fn live(m: &GetEventSourceMappingOutput) -> Live {
        Self::live_of(
            m.uuid().unwrap_or_default(),
            m.event_source_mapping_arn().unwrap_or_default(),
        )
    }

    fn live_of(uuid: &str, arn: &str) -> Live {
        Live::new(uuid).attr("uuid", uuid).attr("arn", arn)
    }

    fn settled(state: Option<&str>) -> bool {
        matches!(state, Some("Enabled") | Some("Disabled") | None)
    }

    /// Waits through Creating/Enabling/Updating until the mapping settles.
    async fn wait_settled(&self, cx: &Cx, uuid: &str) -> Result<GetEventSourceMappingOutput> {
        let start = Instant::now();
        loop {
            let m = cx
                .aws
                .lambda
                .get_event_source_mapping()
                .uuid(uuid)
                .send()
                .await
                .context("lambda:GetEventSourceMapping failed")?;
            let state = match m.state() {
                s if Self::settled(s) => return Ok(m),
                s => s.unwrap_or_default().to_string(),
            };
            if start.elapsed() >= Duration::from_secs(600) {
                bail!("mapping {uuid} is still {state} after 10 minutes");
            }
            cx.say(format!("waiting for the mapping: {state}"));
            cx.pause(Duration::from_secs(2), "waiting for the mapping to settle")
                .await?;
        }
    }
}

#[async_trait]
impl Resource for StreamMapping {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "event-source-mapping"
    }
    fn inside(&self) -> Option<&str> {
        // A new table's stream is new: nothing maps it yet. A recorded
        // mapping (on a deleted table's stream) is still read and replaced.
        Some(ids::TABLE)
    }
    fn depends_on(&self) -> Vec<String> {
        vec![
            ids::TABLE.into(),
            ids::BUCKET.into(),
            ids::function(Function::Processor),
            // AWS checks the role can read the stream when the mapping is made.
            ids::STREAM_POLICY.into(),
        ]
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({
            "event_source": cx.attr(ids::TABLE, "stream_arn")?,
            "function": Self::function(cx),
            "starting_position": STARTING_POSITION,
            "enabled": true,
            "settings": Self::want(cx),
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let lambda = &cx.aws.lambda;
        // With a recorded ARN, the tags in the same round as the mapping.
        let rec_arn = rec
            .and_then(|r| r.attrs.get("arn"))
            .filter(|a| !a.is_empty())
            .cloned();
        let early_tags = async {
            match &rec_arn {
                Some(arn) => Some(lambda.list_tags().resource(arn).send().await),
                None => None,
            }
        };
        let (found, early_tags) = tokio::join!(self.find(cx, rec), early_tags);
        let Some(m) = found? else {
            return Ok(None);
        };
        let mut live = Self::live(&m);
        let d = &mut live.drift;
        let stream = cx.attr(ids::TABLE, "stream_arn")?;
        check(
            d,
            "event_source",
            &Some(stream.as_str()),
            &m.event_source_arn(),
        );
        let want_fn = cx.attr(&ids::function(Function::Processor), "arn")?;
        check(d, "function", &Some(want_fn.as_str()), &m.function_arn());
        check(
            d,
            "starting_position",
            &Some(STARTING_POSITION),
            &m.starting_position().map(|p| p.as_str()),
        );
        let enabled = matches!(
            m.state(),
            Some("Enabled" | "Enabling" | "Creating" | "Updating")
        );
        check(d, "enabled", &true, &enabled);
        let (want, have) = (Self::want(cx), Self::have(&m));
        check(d, "batch_size", &want.batch_size, &have.batch_size);
        check(
            d,
            "maximum_retry_attempts",
            &want.maximum_retry_attempts,
            &have.maximum_retry_attempts,
        );
        check(
            d,
            "bisect_batch_on_function_error",
            &want.bisect_batch_on_function_error,
            &have.bisect_batch_on_function_error,
        );
        check(
            d,
            "maximum_record_age_in_seconds",
            &want.maximum_record_age_in_seconds,
            &have.maximum_record_age_in_seconds,
        );
        check(
            d,
            "maximum_batching_window_in_seconds",
            &want.maximum_batching_window_in_seconds,
            &have.maximum_batching_window_in_seconds,
        );
        check(
            d,
            "parallelization_factor",
            &want.parallelization_factor,
            &have.parallelization_factor,
        );
        check(
            d,
            "tumbling_window_in_seconds",
            &want.tumbling_window_in_seconds,
            &have.tumbling_window_in_seconds,
        );
        check(
            d,
            "function_response_types",
            &want.function_response_types,
            &have.function_response_types,
        );
        check(d, "filter", &want.filter, &have.filter);
        check(d, "on_failure", &want.on_failure, &have.on_failure);
        let listed = match (m.event_source_mapping_arn(), early_tags) {
            (Some(arn), Some(t)) if Some(arn) == rec_arn.as_deref() => Some(t),
            (Some(arn), _) => Some(lambda.list_tags().resource(arn).send().await),
            (None, _) => None,
        };
        let tags = match listed {
            Some(Ok(t)) => t.tags().cloned().unwrap_or_default().into_iter().collect(),
            Some(Err(e)) if is_code(&e, &["ResourceNotFoundException"]) => BTreeMap::new(),
            Some(Err(e)) => return Err(e).context("lambda:ListTags failed"),
            None => BTreeMap::new(),
        };
        live.drift.extend(tags_drift(&self.tags(cx), &tags));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let stream = cx.attr(ids::TABLE, "stream_arn")?;
        let out = retry_iam_propagation(cx, || {
            cx.aws
                .lambda
                .create_event_source_mapping()
                .event_source_arn(&stream)
                .function_name(Self::function(cx))
                .starting_position(EventSourcePosition::TrimHorizon)
                .enabled(true)
                .batch_size(BATCH_SIZE)
                .maximum_retry_attempts(MAX_RETRIES)
                .bisect_batch_on_function_error(true)
                .maximum_record_age_in_seconds(MAX_RECORD_AGE_S)
                .function_response_types(FunctionResponseType::ReportBatchItemFailures)
                .filter_criteria(Self::filter_criteria())
                .destination_config(Self::destination(cx))
                .set_tags(Some(self.tags(cx).into_iter().collect()))
                .send()
        })
        .await;
        let created = match out {
            Ok(o) => o,
            // One already maps this stream to this function: converge it.
            Err(e) if is_code(&e, &["ResourceConflictException"]) => {
                let live = self
                    .read(cx, None)
                    .await?
                    .context("the mapping exists but cannot be found")?;
                return Ok(self.update(cx, &live).await?.adopted());
            }
            Err(e) => return Err(e).context("lambda:CreateEventSourceMapping failed"),
        };
        let uuid = created
            .uuid()
            .context("lambda:CreateEventSourceMapping returned no UUID")?;
        // The answer names the mapping; ask again only while it is Creating
        // (or if the answer lacks the ARN dependents and tags need).
        if let (true, Some(arn)) = (
            Self::settled(created.state()),
            created.event_source_mapping_arn().filter(|a| !a.is_empty()),
        ) {
            return Ok(Self::live_of(uuid, arn));
        }
        Ok(Self::live(&self.wait_settled(cx, uuid).await?))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let lambda = &cx.aws.lambda;
        let uuid = live.physical_id.clone();
        let fields: Vec<&str> = live.drift.iter().map(|d| d.field.as_str()).collect();
        // The source and the starting position cannot change in place.
        if fields
            .iter()
            .any(|f| matches!(*f, "event_source" | "starting_position"))
        {
            cx.say("replacing the mapping (source or starting position differs)");
            self.delete(
                cx,
                Some(&Record {
                    kind: self.kind().into(),
                    physical_id: uuid,
                    attrs: Default::default(),
                    applied: Value::Null,
                    pending: None,
                }),
            )
            .await?;
            return self.create(cx).await;
        }
        if fields.iter().any(|f| *f != "tags") {
            self.wait_settled(cx, &uuid).await?;
            lambda
                .update_event_source_mapping()
                .uuid(&uuid)
                .function_name(Self::function(cx))
                .enabled(true)
                .batch_size(BATCH_SIZE)
                .maximum_retry_attempts(MAX_RETRIES)
                .bisect_batch_on_function_error(true)
                .maximum_record_age_in_seconds(MAX_RECORD_AGE_S)
                .maximum_batching_window_in_seconds(MAX_BATCHING_WINDOW_S)
                .parallelization_factor(PARALLELIZATION_FACTOR)
                .tumbling_window_in_seconds(TUMBLING_WINDOW_S)
                .function_response_types(FunctionResponseType::ReportBatchItemFailures)
                .filter_criteria(Self::filter_criteria())
                .destination_config(Self::destination(cx))
                .send()
                .await
                .context("lambda:UpdateEventSourceMapping failed")?;
            self.wait_settled(cx, &uuid).await?;
        }
        if fields.contains(&"tags") {
            if let Some(arn) = live.attrs.get("arn") {
                lambda
                    .tag_resource()
                    .resource(arn)
                    .set_tags(Some(self.tags(cx).into_iter().collect()))
                    .send()
                    .await
                    .context("lambda:TagResource failed")?;
            }
        }
        Ok(Live {
            drift: vec![],
            ..live.clone()
        })
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(m) = self.find(cx, rec).await? else {
            return Ok(false);
        };
        let uuid = m.uuid().unwrap_or_default().to_string();
        match cx
            .aws
            .lambda
            .delete_event_source_mapping()
            .uuid(&uuid)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(false),
            Err(e) => return Err(e).context("lambda:DeleteEventSourceMapping failed"),
        }
        cx.say("waiting for the mapping to be deleted");
        let start = Instant::now();
        loop {
            match cx
                .aws
                .lambda
                .get_event_source_mapping()
                .uuid(&uuid)
                .send()
                .await
            {
                Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(true),
                Err(e) => return Err(e).context("lambda:GetEventSourceMapping failed"),
                Ok(_) if start.elapsed() > Duration::from_secs(600) => {
                    bail!("mapping {uuid} was not deleted within 10 minutes")
                }
                Ok(_) => {
                    cx.pause(
                        Duration::from_secs(2),
                        "waiting for the mapping to be deleted",
                    )
                    .await?
                }
            }
        }
    }
}
