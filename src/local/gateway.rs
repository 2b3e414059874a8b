//! The local front door: `POST /webhook` (also `/prod/webhook`, the
//! deployed stage's path) turned into the API Gateway proxy event the
//! receiver gets on AWS, with the usage plan's API-key check, and the
//! receiver's answer turned back into the HTTP response, as API Gateway's
//! AWS_PROXY integration does.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use subtle_eq::constant_time_eq;

use super::runtime::{LocalFunction, Outcome};
use super::Logger;

/// API Gateway's payload limit.
const MAX_PAYLOAD: usize = 10 * 1024 * 1024;

pub struct Gateway {
    pub receiver: Arc<LocalFunction>,
    /// `Some(key)` when requests must carry `x-api-key: key`.
    pub api_key: Option<String>,
    pub account: String,
    pub log: Logger,
}

/// Binds `127.0.0.1:port` and serves until the task is aborted.
pub async fn bind(port: u16) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("cannot listen on 127.0.0.1:{port}: pass another --port (0 picks a free one)")
        })
}

pub async fn serve(listener: tokio::net::TcpListener, gw: Arc<Gateway>) {
    let mut conns = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        let gw = gw.clone();
        conns.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let gw = gw.clone();
                async move { Ok::<_, std::convert::Infallible>(gw.handle(req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
        // Reap finished connections so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Gateway {
    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let resp = self.route(req, peer).await;
        (self.log)(
            "gateway",
            &format!(
                "{method} {path} {} {:.1} ms",
                resp.status().as_u16(),
                started.elapsed().as_secs_f64() * 1000.0
            ),
        );
        resp
    }

    async fn route(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        // API Gateway answers unknown routes and methods this way.
        if req.method() != hyper::Method::POST || !(path == "/webhook" || path == "/prod/webhook") {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"message": "Missing Authentication Token"}),
            );
        }
        if let Some(key) = &self.api_key {
            let given = req
                .headers()
                .get("x-api-key")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !constant_time_eq(given, key.as_bytes()) {
                return json_response(StatusCode::FORBIDDEN, json!({"message": "Forbidden"}));
            }
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_PAYLOAD).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"message": "Request Too Long"}),
                )
            }
        };
        let event = proxy_event(&parts, &body, peer, &self.account);
        match self.receiver.invoke(event.to_string().as_bytes()).await {
            Ok(Outcome::Response(payload)) => proxy_response(&payload).unwrap_or_else(|| {
                (self.log)(
                    "gateway",
                    "the receiver's answer is not a proxy response: 502",
                );
                bad_gateway()
            }),
            Ok(Outcome::Error {
                error_type,
                message,
            }) => {
                (self.log)(
                    "gateway",
                    &format!("receiver failed ({error_type}: {message}): 502"),
                );
                bad_gateway()
            }
            Err(e) => {
                (self.log)("gateway", &format!("receiver not invoked ({e:#}): 502"));
                bad_gateway()
            }
        }
    }
}

fn bad_gateway() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_GATEWAY,
        json!({"message": "Internal server error"}),
    )
}

/// The REST API proxy event (payload format 1.0) for this request.
pub fn proxy_event(
    parts: &hyper::http::request::Parts,
    body: &[u8],
    peer: SocketAddr,
    account: &str,
) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut multi: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        // Single-value map keeps the last value, as API Gateway does.
        headers.insert(k.as_str().to_string(), v.clone());
        multi.entry(k.as_str().to_string()).or_default().push(v);
    }
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    let mut multi_query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(q) = parts.uri.query() {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = urlencoding::decode(k)
                .map(|c| c.into_owned())
                .unwrap_or_default();
            let v = urlencoding::decode(v)
                .map(|c| c.into_owned())
                .unwrap_or_default();
            query.insert(k.clone(), v.clone());
            multi_query.entry(k).or_default().push(v);
        }
    }
    // Text bodies pass as they are; other bytes base64-encoded, flagged.
    let (body_field, is_b64) = match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({
        "resource": "/webhook",
        "path": "/webhook",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": if query.is_empty() { Value::Null } else { json!(query) },
        "multiValueQueryStringParameters": if multi_query.is_empty() { Value::Null } else { json!(multi_query) },
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": "/webhook",
            "httpMethod": "POST",
            "path": "/prod/webhook",
            "accountId": account,
            "stage": "prod",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTimeEpoch": now,
            "protocol": "HTTP/1.1",
            "apiId": "local",
            "identity": {
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get("user-agent").and_then(|v| v.to_str().ok()),
                "apiKey": parts.headers.get("x-api-key").map(|_| "(redacted)"),
            },
        },
        "body": body_field,
        "isBase64Encoded": is_b64,
    })
}

/// The HTTP response for a proxy integration answer; `None` if malformed
/// (API Gateway then answers 502).
pub fn proxy_response(payload: &[u8]) -> Option<Response<Full<Bytes>>> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let status = v.get("statusCode")?.as_u64()?;
    let status = StatusCode::from_u16(u16::try_from(status).ok()?).ok()?;
    let body = match v.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if v["isBase64Encoded"].as_bool() == Some(true) => {
            base64::engine::general_purpose::STANDARD.decode(s).ok()?
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(_) => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(Value::Object(m)) = v.get("headers") {
        for (k, val) in m {
            if let (Ok(k), Some(Ok(val))) = (
                k.parse::<hyper::header::HeaderName>(),
                val.as_str()
                    .map(|s| s.parse::<hyper::header::HeaderValue>()),
            ) {
                h.insert(k, val);
            }
        }
    }
    if let Some(Value::Object(m)) = v.get("multiValueHeaders") {
        for (k, vals) in m {
            let Ok(k) = k.parse::<hyper::header::HeaderName>() else {
                continue;
            };
            h.remove(&k);
            for val in vals.as_array().into_iter().flatten() {
                if let Some(Ok(val)) = val.as_str().map(|s| s.parse()) {
                    h.append(k.clone(), val);
                }
            }
        }
    }
    Some(r)
}

mod subtle_eq {
    /// Compares without an early exit, so timing does not reveal how much
    /// of a guessed key was right.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
        for (i, x) in b.iter().enumerate() {
            diff |= a.get(i).copied().unwrap_or(0) ^ x;
        }
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_comparison_needs_the_whole_key() {
        assert!(subtle_eq::constant_time_eq(b"abc", b"abc"));
        assert!(!subtle_eq::constant_time_eq(b"ab", b"abc"));
        assert!(!subtle_eq::constant_time_eq(b"abcd", b"abc"));
        assert!(!subtle_eq::constant_time_eq(b"abd", b"abc"));
        assert!(!subtle_eq::constant_time_eq(b"", b"abc"));
    }

    #[test]
    fn proxy_answers_become_http_responses() {
        let r = proxy_response(
            br#"{"statusCode":401,"headers":{"content-type":"application/json"},"body":"{\"error\":\"x\"}"}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(proxy_response(br#"{"body":"no status"}"#).is_none());
        assert!(proxy_response(b"not json").is_none());
    }

    #[test]
    fn request_becomes_a_rest_proxy_event() {
        let req = Request::post("/webhook?a=1&a=2")
            .header("webhook-id", "msg_1")
            .header("x-api-key", "k")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let ev = proxy_event(&parts, b"{\"x\":1}", peer, "123456789012");
        assert_eq!(ev["httpMethod"], "POST");
        assert_eq!(ev["headers"]["webhook-id"], "msg_1");
        assert_eq!(ev["body"], "{\"x\":1}");
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!(
            ev["multiValueQueryStringParameters"]["a"],
            json!(["1", "2"])
        );
        assert_eq!(ev["requestContext"]["stage"], "prod");
        // The key's value does not travel into the function's event.
        assert!(!ev["requestContext"].to_string().contains("\"k\""));
        let bin = proxy_event(&parts, &[0xff, 0xfe], peer, "1");
        assert_eq!(bin["isBase64Encoded"], true);
        assert_eq!(bin["body"], "//4=");
    }
}
