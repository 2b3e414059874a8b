//! Webhook signature verification (Standard Webhooks, Stripe, GitHub).
//!
//! Tags are compared with `subtle`'s constant-time equality.
//! Several secrets may be configured at once (rotation): a request is accepted
//! if any signature in its header matches under any secret.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::HeaderMap;
use subtle::ConstantTimeEq as _;

/// Timestamp tolerance, in seconds, for the schemes that sign a timestamp.
pub const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Stripe,
    Github,
    None,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard-webhooks" => Some(Self::StandardWebhooks),
            "stripe" => Some(Self::Stripe),
            "github" => Some(Self::Github),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    /// Value stored as the item's `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::None => "none",
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum VerifyError {
    /// A required header is absent.
    Missing,
    /// A header is present but not in the scheme's format.
    Malformed,
    /// The signed timestamp is outside the tolerance.
    Expired,
    /// No signature matched any secret.
    Mismatch,
}

#[derive(Debug)]
pub enum ConfigError {
    MissingSecret,
    BadSecret,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never include the secret itself.
        match self {
            Self::MissingSecret => f.write_str("signing secret is required for this scheme"),
            Self::BadSecret => f.write_str("signing secret is not valid for this scheme"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A scheme plus its HMAC keys (current first, then the previous one during a rotation).
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Verifier {
    /// `secrets`: the configured secret strings, empty ones ignored.
    pub fn new(scheme: Scheme, secrets: &[&str]) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            let key = match scheme {
                // Standard Webhooks: the key is the base64 part after `whsec_`.
                Scheme::StandardWebhooks => {
                    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
                    B64.decode(b64).map_err(|_| ConfigError::BadSecret)?
                }
                // Stripe keys the HMAC with the whole secret string, `whsec_` included.
                Scheme::Stripe | Scheme::Github => s.as_bytes().to_vec(),
                Scheme::None => continue,
            };
            if key.is_empty() {
                return Err(ConfigError::BadSecret);
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &key));
        }
        if scheme != Scheme::None && keys.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        Ok(Self { scheme, keys })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Verifies `body` (raw bytes as received) against the request headers.
    /// `now` is Unix time in seconds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        match self.scheme {
            Scheme::None => Ok(()),
            Scheme::StandardWebhooks => self.verify_standard(headers, body, now),
            Scheme::Stripe => self.verify_stripe(headers, body, now),
            Scheme::Github => self.verify_github(headers, body),
        }
    }

    /// The expected tag under each key: computed once per request, however
    /// many signatures the sender lists (each costs a hash of the body).
    fn tags(&self, parts: &[&[u8]]) -> Vec<hmac::Tag> {
        self.keys
            .iter()
            .map(|key| {
                let mut ctx = hmac::Context::with_key(key);
                for p in parts {
                    ctx.update(p);
                }
                ctx.sign()
            })
            .collect()
    }

    fn any_tag_matches(tags: &[hmac::Tag], sig: &[u8]) -> bool {
        // Every tag is compared (no early exit) so timing does not reveal which matched.
        let mut ok = subtle::Choice::from(0);
        for tag in tags {
            let tag = tag.as_ref();
            // Length is public (32 bytes); contents are compared in constant time.
            if tag.len() == sig.len() {
                ok |= tag.ct_eq(sig);
            }
        }
        ok.into()
    }

    fn verify_standard(&self, h: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let id = header(h, "webhook-id")?;
        let ts_str = header(h, "webhook-timestamp")?;
        let sigs = header(h, "webhook-signature")?;
        let ts: i64 = ts_str.trim().parse().map_err(|_| VerifyError::Malformed)?;
        check_timestamp(ts, now)?;
        let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_str.as_bytes(), b".", body];
        let tags = self.tags(&parts);
        let mut seen = false;
        for entry in sigs.split(' ').filter(|e| !e.is_empty()) {
            let Some((version, sig)) = entry.split_once(',') else {
                continue;
            };
            if version != "v1" {
                continue;
            }
            let Ok(sig) = B64.decode(sig) else { continue };
            seen = true;
            if Self::any_tag_matches(&tags, &sig) {
                return Ok(());
            }
        }
        Err(if seen {
            VerifyError::Mismatch
        } else {
            VerifyError::Malformed
        })
    }

    fn verify_stripe(&self, h: &HeaderMap, body: &[u8], now: i64) -> Result<(), VerifyError> {
        let value = header(h, "stripe-signature")?;
        let mut ts_str = None;
        let mut sigs = Vec::new();
        for item in value.split(',') {
            match item.trim().split_once('=') {
                Some(("t", t)) => ts_str = Some(t),
                Some(("v1", s)) => sigs.push(s),
                _ => {}
            }
        }
        let ts_str = ts_str.ok_or(VerifyError::Malformed)?;
        let ts: i64 = ts_str.parse().map_err(|_| VerifyError::Malformed)?;
        if sigs.is_empty() {
            return Err(VerifyError::Malformed);
        }
        // Stripe's libraries reject only old timestamps; the tolerance here
        // is the same both ways, as for Standard Webhooks, and is checked
        // first so a stale request costs no hashing.
        check_timestamp(ts, now)?;
        let parts: [&[u8]; 3] = [ts_str.as_bytes(), b".", body];
        let tags = self.tags(&parts);
        let matched = sigs.iter().any(|s| {
            hex::decode(s)
                .map(|sig| Self::any_tag_matches(&tags, &sig))
                .unwrap_or(false)
        });
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        Ok(())
    }

    fn verify_github(&self, h: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
        let value = header(h, "x-hub-signature-256")?;
        let hex_sig = value
            .trim()
            .strip_prefix("sha256=")
            .ok_or(VerifyError::Malformed)?;
        let sig = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed)?;
        if Self::any_tag_matches(&self.tags(&[body]), &sig) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Too old or too new (a sender's clock ahead by more than the tolerance).
/// `abs_diff`: a crafted timestamp cannot overflow the subtraction.
fn check_timestamp(ts: i64, now: i64) -> Result<(), VerifyError> {
    if now.abs_diff(ts) > TOLERANCE_SECS.unsigned_abs() {
        return Err(VerifyError::Expired);
    }
    Ok(())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, VerifyError> {
    h.get(name)
        .ok_or(VerifyError::Missing)?
        .to_str()
        .map_err(|_| VerifyError::Malformed)
}

/// HMAC-SHA256 of the concatenated parts (also used by tests to sign).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    // Published test vector of the Standard Webhooks reference libraries.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(sig: &str, ts: i64) -> HeaderMap {
        headers(&[
            ("webhook-id", SW_ID),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", sig),
        ])
    }

    #[test]
    fn standard_webhooks_published_vector() {
        let v = Verifier::new(Scheme::StandardWebhooks, &[SW_SECRET]).unwrap();
        assert_eq!(v.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS), Ok(()));
    }

    #[test]
    fn standard_webhooks_rejections() {
        let v = Verifier::new(Scheme::StandardWebhooks, &[SW_SECRET]).unwrap();
        let h = sw_headers(SW_SIG, SW_TS);
        // Tampered body.
        assert_eq!(
            v.verify(&h, br#"{"test": 2432232315}"#, SW_TS),
            Err(VerifyError::Mismatch)
        );
        // Expired and future timestamps (both directions).
        assert_eq!(
            v.verify(&h, SW_BODY, SW_TS + TOLERANCE_SECS + 1),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&h, SW_BODY, SW_TS - TOLERANCE_SECS - 1),
            Err(VerifyError::Expired)
        );
        assert_eq!(v.verify(&h, SW_BODY, SW_TS + TOLERANCE_SECS), Ok(()));
        // Wrong secret.
        let other = Verifier::new(
            Scheme::StandardWebhooks,
            &["whsec_c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1vbmU="],
        )
        .unwrap();
        assert_eq!(other.verify(&h, SW_BODY, SW_TS), Err(VerifyError::Mismatch));
        // Missing headers.
        let mut missing = h.clone();
        missing.remove("webhook-signature");
        assert_eq!(
            v.verify(&missing, SW_BODY, SW_TS),
            Err(VerifyError::Missing)
        );
        let mut missing = h.clone();
        missing.remove("webhook-id");
        assert_eq!(
            v.verify(&missing, SW_BODY, SW_TS),
            Err(VerifyError::Missing)
        );
        // A timestamp at the ends of i64 is refused, not an overflow.
        for ts in [i64::MIN, i64::MAX] {
            assert_eq!(
                v.verify(&sw_headers(SW_SIG, ts), SW_BODY, SW_TS),
                Err(VerifyError::Expired)
            );
        }
        // Garbage signature list.
        assert_eq!(
            v.verify(&sw_headers("nonsense", SW_TS), SW_BODY, SW_TS),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn standard_webhooks_multiple_signatures_and_rotation() {
        let v = Verifier::new(Scheme::StandardWebhooks, &[SW_SECRET]).unwrap();
        let multi = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,xyz {SW_SIG}");
        assert_eq!(v.verify(&sw_headers(&multi, SW_TS), SW_BODY, SW_TS), Ok(()));
        // New secret first, previous second: signatures under either verify.
        let rotated = Verifier::new(
            Scheme::StandardWebhooks,
            &["whsec_bmV3LXNlY3JldC1ieXRlcw==", SW_SECRET],
        )
        .unwrap();
        assert_eq!(
            rotated.verify(&sw_headers(SW_SIG, SW_TS), SW_BODY, SW_TS),
            Ok(())
        );
    }

    // Stripe vector computed independently with Python's hmac module:
    // hmac.new(b"whsec_test_secret", b"1700000000." + body, sha256).hexdigest()
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_TS: i64 = 1700000000;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_123","type":"payment_intent.succeeded"}"#;
    const STRIPE_SIG: &str = "4a444f0b337026383657499c82ee16800bfbef2ca4a9c2391a7c1e21f262d969";

    #[test]
    fn stripe_vector_and_rejections() {
        let v = Verifier::new(Scheme::Stripe, &[STRIPE_SECRET]).unwrap();
        let header_value = format!("t={STRIPE_TS},v1={STRIPE_SIG},v0=deadbeef");
        let h = headers(&[("stripe-signature", &header_value)]);
        assert_eq!(v.verify(&h, STRIPE_BODY, STRIPE_TS + 10), Ok(()));
        // The tolerance holds both ways: a timestamp an hour ahead of the
        // receiver's clock is refused like one an hour old.
        assert_eq!(
            v.verify(&h, STRIPE_BODY, STRIPE_TS - 3600),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&h, STRIPE_BODY, STRIPE_TS + TOLERANCE_SECS + 1),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&h, STRIPE_BODY, STRIPE_TS - TOLERANCE_SECS),
            Ok(())
        );
        assert_eq!(v.verify(&h, b"{}", STRIPE_TS), Err(VerifyError::Mismatch));
        let wrong = Verifier::new(Scheme::Stripe, &["whsec_other"]).unwrap();
        assert_eq!(
            wrong.verify(&h, STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::Mismatch)
        );
        // Several v1 signatures (Stripe sends one per active secret).
        let two = format!("t={STRIPE_TS},v1={},v1={STRIPE_SIG}", "00".repeat(32));
        let h2 = headers(&[("stripe-signature", &two)]);
        assert_eq!(v.verify(&h2, STRIPE_BODY, STRIPE_TS), Ok(()));
        // Rotation: previous secret still accepted.
        let rotated = Verifier::new(Scheme::Stripe, &["whsec_new", STRIPE_SECRET]).unwrap();
        assert_eq!(rotated.verify(&h, STRIPE_BODY, STRIPE_TS), Ok(()));
        // Missing / malformed header.
        assert_eq!(
            v.verify(&HeaderMap::new(), STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::Missing)
        );
        let bad = headers(&[("stripe-signature", "v1=abc")]);
        assert_eq!(
            v.verify(&bad, STRIPE_BODY, STRIPE_TS),
            Err(VerifyError::Malformed)
        );
    }

    // GitHub's documented example ("Validating webhook deliveries").
    #[test]
    fn github_documented_vector_and_rejections() {
        let v = Verifier::new(Scheme::Github, &["It's a Secret to Everybody"]).unwrap();
        let h = headers(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(v.verify(&h, b"Hello, World!", 0), Ok(()));
        assert_eq!(
            v.verify(&h, b"Hello, World?", 0),
            Err(VerifyError::Mismatch)
        );
        let wrong = Verifier::new(Scheme::Github, &["nope"]).unwrap();
        assert_eq!(
            wrong.verify(&h, b"Hello, World!", 0),
            Err(VerifyError::Mismatch)
        );
        let rotated =
            Verifier::new(Scheme::Github, &["new one", "It's a Secret to Everybody"]).unwrap();
        assert_eq!(rotated.verify(&h, b"Hello, World!", 0), Ok(()));
        assert_eq!(
            v.verify(&HeaderMap::new(), b"Hello, World!", 0),
            Err(VerifyError::Missing)
        );
        let sha1 = headers(&[("x-hub-signature-256", "sha1=abcd")]);
        assert_eq!(v.verify(&sha1, b"x", 0), Err(VerifyError::Malformed));
    }

    #[test]
    fn config_errors() {
        assert!(matches!(
            Verifier::new(Scheme::Github, &[]),
            Err(ConfigError::MissingSecret)
        ));
        assert!(matches!(
            Verifier::new(Scheme::StandardWebhooks, &["whsec_***"]),
            Err(ConfigError::BadSecret)
        ));
        assert!(Verifier::new(Scheme::None, &[]).is_ok());
        assert_eq!(Scheme::parse("stripe"), Some(Scheme::Stripe));
        assert_eq!(Scheme::parse("STRIPE"), None);
    }
}
