//! Receiver: API Gateway proxy request → verified, deduplicated DynamoDB item.

use std::borrow::Cow;
use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use http::HeaderMap;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::signature::{Scheme, Verifier, VerifyError};
use crate::util;

/// Default body limit: DynamoDB items are at most 400 KB, and the item also
/// carries the other attributes; 256 KiB leaves ample headroom.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// Hard ceiling for `MAX_BODY_BYTES` (DynamoDB's item limit minus headroom).
pub const MAX_BODY_BYTES_CEILING: usize = 380 * 1024;
pub const DEFAULT_TTL_DAYS: i64 = 90;

#[derive(Debug)]
pub struct ReceiverConfig {
    pub table_name: String,
    pub verifier: Verifier,
    pub ttl_days: i64,
    pub max_body_bytes: usize,
}

impl ReceiverConfig {
    /// Reads `TABLE_NAME`, `SIGNATURE_SCHEME`, `SIGNING_SECRET`,
    /// `SIGNING_SECRET_PREVIOUS`, `EVENT_TTL_DAYS`, `MAX_BODY_BYTES`.
    /// Error messages name variables, never their values.
    pub fn from_env() -> Result<Self, String> {
        let table_name = util::env_required("TABLE_NAME")?;
        let scheme_name = util::env_required("SIGNATURE_SCHEME")?;
        let scheme = Scheme::parse(&scheme_name)
            .ok_or("SIGNATURE_SCHEME must be standard-webhooks, stripe, github or none")?;
        let current = std::env::var("SIGNING_SECRET").unwrap_or_default();
        let previous = std::env::var("SIGNING_SECRET_PREVIOUS").unwrap_or_default();
        let verifier = Verifier::new(scheme, &[&current, &previous])
            .map_err(|e| format!("SIGNING_SECRET: {e}"))?;
        let ttl_days = match std::env::var("EVENT_TTL_DAYS") {
            Ok(v) => v
                .parse::<i64>()
                .ok()
                .filter(|d| *d > 0)
                .ok_or("EVENT_TTL_DAYS must be a positive integer")?,
            Err(_) => DEFAULT_TTL_DAYS,
        };
        let max_body_bytes = match std::env::var("MAX_BODY_BYTES") {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0 && *n <= MAX_BODY_BYTES_CEILING)
                .ok_or("MAX_BODY_BYTES must be between 1 and 389120")?,
            Err(_) => DEFAULT_MAX_BODY_BYTES,
        };
        Ok(Self {
            table_name,
            verifier,
            ttl_days,
            max_body_bytes,
        })
    }
}

/// Why a request was refused; mapped to a status and a fixed, detail-free body.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    BadRequest(&'static str),
    Unauthorized,
    TooLarge,
    Internal,
}

impl Rejection {
    fn status(&self) -> i64 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized => 401,
            Self::TooLarge => 413,
            Self::Internal => 500,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::BadRequest(m) => m,
            Self::Unauthorized => "invalid or missing signature",
            Self::TooLarge => "payload too large",
            Self::Internal => "internal error, retry later",
        }
    }
}

/// Outcome of an accepted request.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: String,
    pub duplicate: bool,
}

/// Lambda entry point logic: never fails, always an HTTP response.
pub async fn handle(
    cfg: &ReceiverConfig,
    ddb: &aws_sdk_dynamodb::Client,
    req: &ApiGatewayProxyRequest,
    now: i64,
) -> ApiGatewayProxyResponse {
    match receive(cfg, ddb, req, now).await {
        Ok(a) => {
            tracing::info!(event_id = %a.event_id, duplicate = a.duplicate, "event accepted");
            response(
                200,
                &json!({ "eventId": a.event_id, "duplicate": a.duplicate }),
            )
        }
        Err(r) => response(r.status(), &json!({ "error": r.message() })),
    }
}

pub async fn receive(
    cfg: &ReceiverConfig,
    ddb: &aws_sdk_dynamodb::Client,
    req: &ApiGatewayProxyRequest,
    now: i64,
) -> Result<Accepted, Rejection> {
    let body = raw_body(req)?;
    let prepared = prepare(cfg, &req.headers, &body, now)?;
    store(cfg, ddb, &prepared, &body, now).await
}

/// The request's body bytes exactly as the sender sent them.
fn raw_body(req: &ApiGatewayProxyRequest) -> Result<Vec<u8>, Rejection> {
    let body = req.body.as_deref().unwrap_or("");
    if req.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| Rejection::BadRequest("malformed body encoding"))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// The body fields the receiver reads; everything else is only validated.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: StrField<'a>,
    #[serde(default, borrow, rename = "type")]
    type_: StrField<'a>,
    #[serde(default, borrow, rename = "eventId")]
    event_id: StrField<'a>,
    #[serde(default, borrow, rename = "eventType")]
    event_type: StrField<'a>,
}

/// Any JSON value, kept only when it is a string.
#[derive(Default)]
struct StrField<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for StrField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrFieldVisitor)
    }
}

struct StrFieldVisitor;

impl<'de> Visitor<'de> for StrFieldVisitor {
    type Value = StrField<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(StrField(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(StrField(Some(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(StrField(Some(Cow::Owned(v))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(StrField(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(StrField(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(StrField(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(StrField(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(StrField(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(StrField(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(StrField(None))
    }
}

/// What the CPU-only part of the pipeline extracts from a request.
#[derive(Debug)]
pub struct Prepared {
    pub event_id: String,
    pub event_type: String,
}

/// Verify, check size, parse: everything before the DynamoDB call. Public so
/// benchmarks can measure it without a network.
pub fn prepare(
    cfg: &ReceiverConfig,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Prepared, Rejection> {
    // The signature comes first: an unauthenticated request learns nothing else.
    cfg.verifier
        .verify(headers, body, now)
        .map_err(|e: VerifyError| {
            tracing::warn!(reason = ?e, "signature rejected");
            Rejection::Unauthorized
        })?;
    if body.len() > cfg.max_body_bytes {
        tracing::warn!(size = body.len(), "payload too large");
        return Err(Rejection::TooLarge);
    }
    // JSON is UTF-8 (RFC 8259); the envelope parse below skips unread strings
    // without checking them, so check the whole body here.
    if std::str::from_utf8(body).is_err() {
        return Err(Rejection::BadRequest("malformed JSON"));
    }
    // Only a JSON object is accepted (serde would also map an array onto the
    // envelope struct, so check the first byte).
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Err(Rejection::BadRequest("payload must be a JSON object")),
            Err(_) => Err(Rejection::BadRequest("malformed JSON")),
        };
    }
    // Full syntax check, but only the few string fields we need are kept
    // (borrowed when unescaped): no tree of `Value`s per request.
    let env: Envelope<'_> =
        serde_json::from_slice(body).map_err(|_| Rejection::BadRequest("malformed JSON"))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());

    let scheme_id = match cfg.verifier.scheme() {
        Scheme::StandardWebhooks => header("webhook-id"),
        Scheme::Stripe => env.id.0.as_deref(),
        Scheme::Github => header("x-github-delivery"),
        Scheme::None => None,
    };
    let event_id = scheme_id
        .or(env.event_id.0.as_deref())
        .ok_or(Rejection::BadRequest("missing event id"))?;
    if !util::valid_event_id(event_id) {
        return Err(Rejection::BadRequest("invalid event id"));
    }
    let event_type = match cfg.verifier.scheme() {
        Scheme::Github => header("x-github-event"),
        _ => None,
    }
    .or(env.type_.0.as_deref())
    .or(env.event_type.0.as_deref())
    .unwrap_or("unknown");
    Ok(Prepared {
        event_id: event_id.to_owned(),
        event_type: event_type.chars().take(200).collect(),
    })
}

async fn store(
    cfg: &ReceiverConfig,
    ddb: &aws_sdk_dynamodb::Client,
    p: &Prepared,
    body: &[u8],
    now: i64,
) -> Result<Accepted, Rejection> {
    let result = ddb
        .put_item()
        .table_name(&cfg.table_name)
        .set_item(Some(build_item(cfg, p, body, now)))
        .condition_expression("attribute_not_exists(eventId)")
        .send()
        .await;
    match result {
        Ok(_) => Ok(Accepted {
            event_id: p.event_id.clone(),
            duplicate: false,
        }),
        Err(SdkError::ServiceError(e))
            if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
        {
            Ok(Accepted {
                event_id: p.event_id.clone(),
                duplicate: true,
            })
        }
        Err(e) => {
            // Logged for operators; the sender gets a generic 500 and retries.
            tracing::error!(
                event_id = %p.event_id,
                error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e),
                "storing event failed"
            );
            Err(Rejection::Internal)
        }
    }
}

/// The DynamoDB item for an accepted event (raw body as a binary attribute,
/// so it is stored byte for byte).
pub fn build_item(
    cfg: &ReceiverConfig,
    p: &Prepared,
    body: &[u8],
    now: i64,
) -> HashMap<String, AttributeValue> {
    let expires_at = now + cfg.ttl_days * 86_400;
    HashMap::from([
        ("eventId".to_owned(), AttributeValue::S(p.event_id.clone())),
        ("body".to_owned(), AttributeValue::B(Blob::new(body))),
        (
            "source".to_owned(),
            AttributeValue::S(cfg.verifier.scheme().as_str().to_owned()),
        ),
        (
            "eventType".to_owned(),
            AttributeValue::S(p.event_type.clone()),
        ),
        (
            "receivedAt".to_owned(),
            AttributeValue::S(util::rfc3339(now)),
        ),
        (
            "status".to_owned(),
            AttributeValue::S("received".to_owned()),
        ),
        (
            "expiresAt".to_owned(),
            AttributeValue::N(expires_at.to_string()),
        ),
    ])
}

fn response(status: i64, body: &Value) -> ApiGatewayProxyResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.headers = headers;
    r.body = Some(Body::Text(body.to_string()));
    r.is_base64_encoded = false;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scheme: Scheme) -> ReceiverConfig {
        ReceiverConfig {
            table_name: "t".into(),
            verifier: Verifier::new(scheme, &["s3cret"]).unwrap(),
            ttl_days: 90,
            max_body_bytes: 1024,
        }
    }

    #[test]
    fn parse_extracts_ids_and_types_and_rejects_non_objects() {
        let c = cfg(Scheme::None);
        let h = HeaderMap::new();
        let p = prepare(
            &c,
            &h,
            br#" {"n":[1,{"eventId":"inner"}],"eventId":"ev\u0031","type":7,"eventType":"t"}"#,
            0,
        )
        .unwrap();
        assert_eq!(p.event_id, "ev1");
        assert_eq!(p.event_type, "t");
        let err = |b: &[u8]| prepare(&c, &h, b, 0).unwrap_err();
        assert_eq!(
            err(b"[1]"),
            Rejection::BadRequest("payload must be a JSON object")
        );
        assert_eq!(
            err(b"\"x\""),
            Rejection::BadRequest("payload must be a JSON object")
        );
        assert_eq!(
            err(b"{\"eventId\":\"a\"} x"),
            Rejection::BadRequest("malformed JSON")
        );
        assert_eq!(err(b"[1,"), Rejection::BadRequest("malformed JSON"));
        assert_eq!(err(b""), Rejection::BadRequest("malformed JSON"));
        assert_eq!(
            err(b"{\"eventId\":5}"),
            Rejection::BadRequest("missing event id")
        );
        let big = format!("{{\"eventId\":\"a\",\"p\":\"{}\"}}", "x".repeat(2000));
        assert_eq!(err(big.as_bytes()), Rejection::TooLarge);
    }

    #[test]
    fn stripe_id_comes_from_the_body() {
        let c = cfg(Scheme::Stripe);
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let sig = hex::encode(crate::signature::hmac_sha256(
            b"s3cret",
            &[b"100", b".", body],
        ));
        let mut h = HeaderMap::new();
        h.insert(
            "stripe-signature",
            http::HeaderValue::from_str(&format!("t=100,v1={sig}")).unwrap(),
        );
        let p = prepare(&c, &h, body, 100).unwrap();
        assert_eq!(
            (p.event_id.as_str(), p.event_type.as_str()),
            ("evt_1", "charge.succeeded")
        );
    }
}
