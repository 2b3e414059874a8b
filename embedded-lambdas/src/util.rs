//! Small helpers shared by the handlers: time formatting, key building,
//! SDK client construction.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn datetime(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_default()
}

/// RFC 3339 UTC timestamp with second precision, e.g. `2026-01-02T03:04:05Z`.
pub fn rfc3339(unix: i64) -> String {
    datetime(unix).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 timestamp into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp())
}

/// `YYYY/MM/DD` of a Unix time, for date-partitioned keys.
pub fn date_path(unix: i64) -> String {
    datetime(unix).format("%Y/%m/%d").to_string()
}

/// `<prefix>YYYY/MM/DD/<event_id>.json`
pub fn dated_key(prefix: &str, unix: i64, event_id: &str) -> String {
    format!("{prefix}{}/{event_id}.json", date_path(unix))
}

/// Event ids end up in S3 keys and DynamoDB keys: keep them short and free of
/// `/` and other characters that would change the key layout.
pub fn valid_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Decodes an S3 event notification key (URL-encoded, `+` for space).
pub fn decode_s3_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Loads the SDK configuration from the Lambda environment (credentials,
/// region, and `AWS_ENDPOINT_URL` for emulators).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

pub fn dynamodb_client(conf: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(conf)
}

/// S3 client; path-style addressing when an endpoint URL is set, because
/// virtual-hosted buckets do not resolve on an emulator's `127.0.0.1`.
pub fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let builder =
        aws_sdk_s3::config::Builder::from(conf).force_path_style(conf.endpoint_url().is_some());
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Budget for the init-time connection warm-up; it must never hold up init
/// for long if the endpoint is slow or unreachable.
const PREWARM_TIMEOUT: Duration = Duration::from_millis(1000);

// Why pre-warm: the SDK keeps HTTPS connections in a per-client pool. The first
// call on a fresh client pays DNS + TCP + TLS handshake (tens of ms, more from
// a VPC). Making one cheap call during init moves that cost out of the first
// request; the pooled connection is then reused by the handler. The result is
// ignored (an AccessDenied would still leave the connection open), yet the roles
// allow both calls, so that cold starts put no AccessDenied in CloudTrail.

/// Opens a pooled connection to DynamoDB during init (DescribeEndpoints is
/// the cheapest DynamoDB call).
pub async fn prewarm_dynamodb(client: &aws_sdk_dynamodb::Client) {
    // No retries: one attempt is enough to open the connection, and retrying
    // a failure would only stretch init.
    let call = client
        .describe_endpoints()
        .customize()
        .config_override(
            aws_sdk_dynamodb::config::Builder::default()
                .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
        )
        .send();
    let _ = tokio::time::timeout(PREWARM_TIMEOUT, call).await;
}

/// Opens a pooled connection to S3 during init (HeadBucket on our bucket, so
/// the connection goes to the same path-style or virtual host the handler uses).
pub async fn prewarm_s3(client: &aws_sdk_s3::Client, bucket: &str) {
    let call = client
        .head_bucket()
        .bucket(bucket)
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default()
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
        )
        .send();
    let _ = tokio::time::timeout(PREWARM_TIMEOUT, call).await;
}

/// Reads a required environment variable.
pub fn env_required(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("environment variable {name} is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_keys() {
        assert_eq!(rfc3339(1_767_322_245), "2026-01-02T02:50:45Z");
        assert_eq!(parse_rfc3339("2026-01-02T02:50:45Z"), Some(1_767_322_245));
        assert_eq!(
            parse_rfc3339("2019-11-14T00:13:49.717Z"),
            Some(1_573_690_429)
        );
        assert_eq!(
            dated_key("events/", 1_767_322_245, "evt_1"),
            "events/2026/01/02/evt_1.json"
        );
    }

    #[test]
    fn event_ids() {
        assert!(valid_event_id("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        assert!(valid_event_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
        assert!(!valid_event_id("../x"));
        assert!(!valid_event_id(""));
        assert!(!valid_event_id(&"a".repeat(201)));
    }

    #[test]
    fn s3_keys_decode() {
        assert_eq!(decode_s3_key("a+b%2Fc%3D"), "a b/c=");
        assert_eq!(
            decode_s3_key("aws/lambda/x/2019-11-14T00.13.49-u"),
            "aws/lambda/x/2019-11-14T00.13.49-u"
        );
        assert_eq!(decode_s3_key("bad%zz%"), "bad%zz%");
    }
}
