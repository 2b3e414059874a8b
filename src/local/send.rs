//! `send`: a signed test event through the real front door, followed until
//! it is processed and archived. The smoke test for runbooks after `up`
//! (or against `local`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use sha2::Sha256;

use crate::aws::{Clients, ConnectOptions};
use crate::cli::{Cli, Output};
use crate::engine::state::{self, StatePaths};
use crate::resources::lambda_function::SECRET_VAR;
use crate::stack::{self, Function, Signature};

use super::session::{self, LocalPaths};

/// Where to send and what it takes (secrets stay in memory).
struct Target {
    url: String,
    api_key: Option<String>,
    scheme: Signature,
    secret: Option<String>,
    table: String,
    bucket: String,
    aws: Clients,
}

pub async fn run(cli: &Cli, local: bool, wait: Duration) -> Result<u8> {
    let target = if local {
        local_target(cli).await?
    } else {
        deployed_target(cli).await?
    };
    let id = format!("evt_smoke_{}", uuid::Uuid::new_v4().simple());
    let now = crate::local::unix_now();
    let body = json!({
        "id": id,
        "eventId": id,
        "type": "webhook_deploy.smoke_test",
        "created": now,
        "data": { "object": { "note": "sent by webhook-deploy send" } },
    })
    .to_string();
    let headers = signed_headers(
        target.scheme,
        target.secret.as_deref(),
        &id,
        now,
        body.as_bytes(),
    )?;
    let text = cli.common.output == Output::Text;
    if text {
        println!("send: event {id} to {}", target.url);
    }
    let mut stages: Vec<(String, Duration, String)> = Vec::new();
    let started = Instant::now();
    let mut report = |stage: &str, detail: String| {
        let at = started.elapsed();
        if text {
            println!(
                "  {stage:<10} {:>8.0} ms  {detail}",
                at.as_secs_f64() * 1000.0
            );
        }
        stages.push((stage.to_string(), at, detail));
    };
    let result = follow(&target, &id, &body, headers, wait, &mut report).await;
    if cli.common.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "eventId": id,
                "url": target.url,
                "ok": result.is_ok(),
                "error": result.as_ref().err().map(|e| format!("{e:#}")),
                "stages": stages.iter().map(|(s, at, d)| json!({
                    "stage": s, "ms": at.as_millis() as u64, "detail": d,
                })).collect::<Vec<_>>(),
            }))?
        );
    }
    result?;
    if text {
        println!("send: ok, the event went through every stage");
    }
    Ok(crate::commands::EXIT_OK)
}

async fn follow(
    t: &Target,
    id: &str,
    body: &str,
    headers: Vec<(String, String)>,
    wait: Duration,
    report: &mut impl FnMut(&str, String),
) -> Result<()> {
    let (status, answer) = post(&t.url, t.api_key.as_deref(), headers, body).await?;
    if status != 200 {
        let hint = match status {
            403 => "the API key is missing or wrong (or the URL is not the webhook route)",
            401 => "the receiver refused the signature: the signing secret or scheme differs from the stack's",
            400 => "the receiver refused the body",
            413 => "the body is over the receiver's size limit",
            _ => "see the receiver's logs",
        };
        bail!(
            "stage 'accepted' failed: the endpoint answered HTTP {status} ({}): {hint}",
            answer.trim()
        );
    }
    report("accepted", format!("HTTP 200 {}", answer.trim()));

    let deadline = Instant::now() + wait;
    let mut stored = false;
    let archive_key = loop {
        let item = t
            .aws
            .dynamodb
            .get_item()
            .table_name(&t.table)
            .key("eventId", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot read the event from table {}: {}",
                    t.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })?;
        let s = |k: &str| {
            item.item()
                .and_then(|i| i.get(k))
                .and_then(|v| v.as_s().ok())
                .cloned()
        };
        let status = s("status");
        if status.is_some() && !stored {
            stored = true;
            report("stored", format!("table {}", t.table));
        }
        match status.as_deref() {
            Some("processed") => {
                report("processed", "status processed".into());
                break s("archiveKey");
            }
            Some("failed") => bail!(
                "stage 'processed' failed: the event was dead-lettered (status failed); see s3://{}/dead-letters/",
                t.bucket
            ),
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(match status {
                None => format!("stage 'stored' failed: event {id} is not in table {} after {}s", t.table, wait.as_secs()),
                Some(s) => format!("stage 'processed' failed: event {id} is still '{s}' after {}s: is the processor running? (check its logs)", wait.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let key = archive_key.unwrap_or_else(|| {
        format!(
            "{}{}/{id}.json",
            crate::layout::EVENTS_PREFIX,
            chrono::DateTime::from_timestamp(crate::local::unix_now(), 0)
                .unwrap_or_default()
                .format("%Y/%m/%d")
        )
    });
    loop {
        match t
            .aws
            .s3
            .head_object()
            .bucket(&t.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => {
                report("archived", format!("s3://{}/{key}", t.bucket));
                return Ok(());
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
            Err(e) => bail!(
                "cannot check the archive object s3://{}/{key}: {}",
                t.bucket,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ),
        }
        if Instant::now() >= deadline {
            bail!(
                "stage 'archived' failed: s3://{}/{key} does not exist after {}s",
                t.bucket,
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The headers the scheme's senders add (Standard Webhooks, Stripe, GitHub).
pub fn signed_headers(
    scheme: Signature,
    secret: Option<&str>,
    id: &str,
    now: i64,
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    let need = || {
        secret
            .context("no signing secret to sign the test event with: pass --signing-secret-env VAR")
    };
    let ts = now.to_string();
    Ok(match scheme {
        Signature::None => vec![],
        Signature::StandardWebhooks => {
            let s = need()?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(s.strip_prefix("whsec_").unwrap_or(s))
                .context(
                    "the signing secret is not a Standard Webhooks secret (whsec_ + base64)",
                )?;
            let sig = hmac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
            vec![
                ("webhook-id".into(), id.into()),
                ("webhook-timestamp".into(), ts),
                (
                    "webhook-signature".into(),
                    format!(
                        "v1,{}",
                        base64::engine::general_purpose::STANDARD.encode(sig)
                    ),
                ),
            ]
        }
        Signature::Stripe => {
            let sig = hmac(need()?.as_bytes(), &[ts.as_bytes(), b".", body]);
            vec![(
                "stripe-signature".into(),
                format!("t={ts},v1={}", hex::encode(sig)),
            )]
        }
        Signature::Github => {
            let sig = hmac(need()?.as_bytes(), &[body]);
            vec![
                (
                    "x-hub-signature-256".into(),
                    format!("sha256={}", hex::encode(sig)),
                ),
                ("x-github-delivery".into(), id.into()),
                ("x-github-event".into(), "ping".into()),
            ]
        }
    })
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

async fn post(
    url: &str,
    api_key: Option<&str>,
    headers: Vec<(String, String)>,
    body: &str,
) -> Result<(u16, String)> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("cannot load the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(https);
    let mut req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("webhook-deploy/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(k) = api_key {
        req = req.header("x-api-key", k);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .with_context(|| format!("{url} is not a valid URL"))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| anyhow!("stage 'accepted' failed: {url} did not answer within 30s"))?
        .map_err(|e| anyhow!("stage 'accepted' failed: cannot reach {url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((
        status,
        String::from_utf8_lossy(&bytes).chars().take(300).collect(),
    ))
}

async fn local_target(cli: &Cli) -> Result<Target> {
    let c = &cli.common;
    let paths = LocalPaths::new(&c.state_dir, &c.suffix);
    let s = session::running_session(&paths, &c.suffix)?;
    let secrets: session::LocalSecrets = session::read_json(&paths.secrets)?.unwrap_or_default();
    let aws = Clients::connect(&ConnectOptions {
        region: Some(s.region.clone()),
        profile: c.profile.clone(),
        endpoint_url: s.endpoint_url.clone(),
    })
    .await?;
    let scheme = parse_scheme(&s.signature)?;
    Ok(Target {
        url: s.url,
        api_key: if s.api_key_required {
            Some(secrets.api_key.context(format!(
                "the local front door needs an API key but {} has none: restart `webhook-deploy local`",
                paths.secrets.display()
            ))?)
        } else {
            None
        },
        scheme,
        secret: match (operator_secret(cli)?, &s.signing_secret_env) {
            (Some(op), _) => Some(op),
            // `local` took the secret from this variable: read the same one.
            (None, Some(var)) => Some(std::env::var(var).ok().filter(|v| !v.is_empty()).with_context(|| {
                format!("the local pipeline verifies signatures with the secret in ${var}: set {var} for send too (or pass --signing-secret-env)")
            })?),
            (None, None) => secrets.signing_secret,
        },
        table: s.table_name,
        bucket: s.bucket_name,
        aws,
    })
}

async fn deployed_target(cli: &Cli) -> Result<Target> {
    let c = &cli.common;
    let paths = StatePaths::new(&c.state_dir, &c.suffix);
    let Some(st) = state::load(&paths.file)? else {
        bail!(
            "no state file {}: deploy with `webhook-deploy up --suffix {}` first, or pass --local to send to `webhook-deploy local`",
            paths.file.display(),
            c.suffix
        );
    };
    st.check_suffix(&paths.file, &c.suffix)?;
    let out = crate::commands::outputs_json(&st);
    let field = |k: &str| out[k].as_str().map(String::from);
    let url = field("apiUrl").context("the stack has no API yet: run `webhook-deploy up` first")?;
    let aws = Clients::connect(&ConnectOptions {
        region: c.region.clone().or(Some(st.region.clone())),
        ..ConnectOptions::from(c)
    })
    .await?;
    st.check_matches(&paths.file, &c.suffix, &aws.region, &aws.account)?;
    let s = stack::Settings::new(&c.suffix, &aws, stack::StackOptions::default());
    // The scheme and secret the receiver really has.
    let conf = aws
        .lambda
        .get_function_configuration()
        .function_name(s.function_name(Function::Receiver))
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot read the receiver's configuration (lambda:GetFunctionConfiguration): {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            )
        })?;
    let env = conf.environment().and_then(|e| e.variables());
    let var = |k: &str| env.and_then(|v| v.get(k)).cloned();
    let scheme = parse_scheme(&var("SIGNATURE_SCHEME").unwrap_or_else(|| "none".into()))?;
    let api_key = match (
        out["apiKeyRequired"].as_bool() != Some(false),
        field("apiKeyId"),
    ) {
        (true, Some(key_id)) => Some(
            aws.apigateway
                .get_api_key()
                .api_key(&key_id)
                .include_value(true)
                .send()
                .await
                .with_context(|| format!("cannot read API key {key_id} (apigateway:GetApiKey)"))?
                .value()
                .map(String::from)
                .context("apigateway:GetApiKey returned no value")?,
        ),
        _ => None,
    };
    Ok(Target {
        url,
        api_key,
        scheme,
        secret: operator_secret(cli)?.or(var(SECRET_VAR)),
        table: field("tableName").unwrap_or_else(|| s.table_name()),
        bucket: field("bucketName").unwrap_or_else(|| s.bucket_name()),
        aws,
    })
}

fn parse_scheme(s: &str) -> Result<Signature> {
    Signature::parse(s).with_context(|| format!("unknown signature scheme {s:?}"))
}

/// `--signing-secret-env VAR`, when given.
fn operator_secret(cli: &Cli) -> Result<Option<String>> {
    match &cli.compute.signing_secret_env {
        None => Ok(None),
        Some(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Some)
            .with_context(|| format!("--signing-secret-env {var}: the environment variable {var} is not set or empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_receivers_verifier_rules() {
        // Standard Webhooks: HMAC of "id.ts.body" keyed with the base64 part.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let h = signed_headers(
            Signature::StandardWebhooks,
            Some(secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        // The example of the Standard Webhooks specification.
        assert_eq!(h[2].1, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let h = signed_headers(
            Signature::Github,
            Some("It's a Secret to Everybody"),
            "d",
            0,
            b"Hello, World!",
        )
        .unwrap();
        // The example of GitHub's "Validating webhook deliveries".
        assert_eq!(
            h[0].1,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(signed_headers(Signature::Stripe, None, "x", 0, b"").is_err());
        assert!(signed_headers(Signature::None, None, "x", 0, b"")
            .unwrap()
            .is_empty());
    }
}
