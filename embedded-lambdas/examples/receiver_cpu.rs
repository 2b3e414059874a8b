//! CPU cost of the receiver's request path without the network: signature
//! verification + JSON parse + DynamoDB item construction for a ~2 KB
//! Standard Webhooks event, single-threaded. Prints operations per second
//! per core. Not a test; run in an optimised profile:
//! `cargo run --profile lambda --example receiver_cpu -p embedded-lambdas`.

use std::time::Instant;

use base64::Engine as _;
use embedded_lambdas::receiver::{self, ReceiverConfig};
use embedded_lambdas::signature::{hmac_sha256, Scheme, Verifier};
use http::{HeaderMap, HeaderValue};

fn main() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cfg = ReceiverConfig {
        table_name: "t".into(),
        verifier: Verifier::new(Scheme::StandardWebhooks, &[secret]).expect("secret"),
        ttl_days: 90,
        max_body_bytes: receiver::DEFAULT_MAX_BODY_BYTES,
    };
    let now = 1_767_322_245i64;
    let mut body = String::from(r#"{"type":"payment_intent.succeeded","data":{"items":["#);
    let mut i = 0;
    while body.len() < 2000 {
        body.push_str(&format!(
            r#"{{"sku":"SKU-{i:05}","qty":{i},"price":1999}},"#
        ));
        i += 1;
    }
    body.push_str(r#"{"sku":"last","qty":1,"price":1}]}}"#);
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("key");
    let ts = now.to_string();
    let sig = hmac_sha256(
        &key,
        &[b"msg_bench", b".", ts.as_bytes(), b".", body.as_bytes()],
    );
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_static("msg_bench"));
    headers.insert("webhook-timestamp", HeaderValue::from_str(&ts).expect("ts"));
    let sig = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    );
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&sig).expect("sig"),
    );

    let run = |n: u32| {
        let start = Instant::now();
        for _ in 0..n {
            let p = receiver::prepare(&cfg, &headers, body.as_bytes(), now).expect("valid");
            let item = receiver::build_item(&cfg, &p, body.as_bytes(), now);
            std::hint::black_box(item);
        }
        start.elapsed()
    };
    let time = |label: &str, f: &dyn Fn()| {
        let n = 50_000u32;
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("  {label}: {us:.2} us/op");
    };
    time("verify", &|| {
        std::hint::black_box(cfg.verifier.verify(&headers, body.as_bytes(), now)).expect("ok");
    });
    time("hmac only", &|| {
        std::hint::black_box(hmac_sha256(&key, &[body.as_bytes()]));
    });
    run(2_000); // warm-up
    let n = 200_000;
    let elapsed = run(n);
    println!(
        "body {} bytes: {:.0} verify+parse+item ops/s on one core ({:.2} us/op)",
        body.len(),
        f64::from(n) / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / f64::from(n)
    );
}
