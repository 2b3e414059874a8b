//! Receiver: API Gateway proxy request → verified, deduplicated DynamoDB item.

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse};
use aws_lambda_events::encodings::Body;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use http::HeaderMap;
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
    let json: Value =
        serde_json::from_slice(body).map_err(|_| Rejection::BadRequest("malformed JSON"))?;
    let obj = json
        .as_object()
        .ok_or(Rejection::BadRequest("payload must be a JSON object"))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let field = |name: &str| obj.get(name).and_then(Value::as_str);

    let scheme_id = match cfg.verifier.scheme() {
        Scheme::StandardWebhooks => header("webhook-id"),
        Scheme::Stripe => field("id"),
        Scheme::Github => header("x-github-delivery"),
        Scheme::None => None,
    };
    let event_id = scheme_id
        .or_else(|| field("eventId"))
        .ok_or(Rejection::BadRequest("missing event id"))?;
    if !util::valid_event_id(event_id) {
        return Err(Rejection::BadRequest("invalid event id"));
    }
    let event_type = match cfg.verifier.scheme() {
        Scheme::Github => header("x-github-event"),
        _ => None,
    }
    .or_else(|| field("type"))
    .or_else(|| field("eventType"))
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
