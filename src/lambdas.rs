//! The Lambda functions' deployment packages, built and zipped by `build.rs`
//! and embedded in this binary.

/// One embedded deployment package.
#[derive(Debug)]
pub struct EmbeddedLambda {
    /// `receiver`, `processor` or `dead-letter-handler`.
    pub name: &'static str,
    /// Zip holding one executable `bootstrap` (deterministic bytes).
    pub zip: &'static [u8],
    /// Base64 SHA-256 of `zip`, the form of Lambda's `CodeSha256`.
    pub sha256_b64: &'static str,
    /// Hex SHA-256 of `zip`.
    pub sha256_hex: &'static str,
}

macro_rules! embedded {
    ($name:literal) => {
        EmbeddedLambda {
            name: $name,
            zip: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".zip")),
            sha256_b64: include_str!(concat!(env!("OUT_DIR"), "/", $name, ".sha256.b64")),
            sha256_hex: include_str!(concat!(env!("OUT_DIR"), "/", $name, ".sha256.hex")),
        }
    };
}

/// Receiver, processor, dead-letter handler.
pub static ALL: [EmbeddedLambda; 3] = [
    embedded!("receiver"),
    embedded!("processor"),
    embedded!("dead-letter-handler"),
];

/// The package of the function with this base name.
pub fn get(name: &str) -> Option<&'static EmbeddedLambda> {
    ALL.iter().find(|l| l.name == name)
}

/// What `webhook-deploy lambdas` prints: name, zip size, SHA-256 (both forms).
pub fn lambdas_report() -> serde_json::Value {
    serde_json::Value::Array(
        ALL.iter()
            .map(|l| {
                serde_json::json!({
                    "name": l.name,
                    "zipBytes": l.zip.len(),
                    "sha256": l.sha256_hex,
                    "codeSha256": l.sha256_b64,
                })
            })
            .collect(),
    )
}
