//! S3 key layout of the archive bucket, shared by the Lambda functions and the
//! deployer (which includes this file with `#[path]` for IAM resource ARNs and
//! the S3 notification filter). Keep it dependency-free: no `use` of crate items.

// The deployer uses only some of these items.
#![allow(dead_code)]

/// Raw events archived by the processor: `events/YYYY/MM/DD/<eventId>.json`.
pub const EVENTS_PREFIX: &str = "events/";

/// One object per failed event, written by the dead-letter handler:
/// `dead-letters/YYYY/MM/DD/<eventId>.json`.
pub const DEAD_LETTER_PREFIX: &str = "dead-letters/";

/// Failure records the dead-letter handler could not parse are copied here
/// (suffixed with their original key) instead of being dropped.
pub const UNPARSED_PREFIX: &str = "dead-letters/unparsed/";

/// Prefix under which Lambda writes the on-failure invocation records of a
/// stream event source mapping whose on-failure destination is an S3 bucket.
///
/// The AWS Lambda Developer Guide, "Retain discarded records for a DynamoDB
/// event source in Lambda" (section "Example Amazon S3 invocation record"),
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>,
/// documents the object naming convention as
/// `aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>`
/// (the same layout is given for Kinesis in `kinesis-on-failure-destination.html`).
/// The key has no file extension, so the notification filter is prefix-only.
pub const FAILURE_RECORD_PREFIX: &str = "aws/lambda/";

/// Failure-record prefix of one event source mapping (its UUID is known only
/// after CreateEventSourceMapping): `aws/lambda/<ESM-UUID>/`.
pub fn failure_record_prefix_for_mapping(esm_uuid: &str) -> String {
    format!("{FAILURE_RECORD_PREFIX}{esm_uuid}/")
}

/// CloudWatch embedded-metric-format namespace of the dead-letter metric.
pub const METRIC_NAMESPACE: &str = "WebhookPipeline";

/// Metric emitted (EMF) by the dead-letter handler: number of events written
/// under [`DEAD_LETTER_PREFIX`] (unparsed failure records count as one each).
/// Dimension: `FunctionName`.
pub const DEAD_LETTER_METRIC: &str = "DeadLetterEvents";
