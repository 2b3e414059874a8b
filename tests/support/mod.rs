//! Shared integration-test support: a moto emulator, a recording/fault-injecting proxy, and
//! helpers for SDK clients and the deployer binary.
#![allow(dead_code)]

pub mod cli;
pub mod inventory;
pub mod moto;
pub mod proxy;

use std::path::Path;
use std::process::Command;

pub const TEST_REGION: &str = "us-east-1";
pub const TEST_ACCESS_KEY: &str = "testing";
pub const TEST_SECRET_KEY: &str = "testing";
/// moto's fixed account ID.
pub const TEST_ACCOUNT_ID: &str = "123456789012";

/// SDK config for `endpoint`: region us-east-1, static credentials `testing`/`testing`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_in(endpoint, TEST_REGION).await
}

/// SDK config for `endpoint` in `region`.
pub async fn sdk_config_in(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            TEST_ACCESS_KEY,
            TEST_SECRET_KEY,
            None,
            None,
            "test-support",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// S3 client with path-style addressing (needed with a 127.0.0.1 / localhost endpoint).
pub fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// The `webhook-deploy` binary with test credentials, region and `AWS_ENDPOINT_URL=endpoint`
/// in its environment. Adds no arguments: the caller adds `--state-dir <state_dir>` and the
/// rest. `state_dir` is created if missing.
pub fn deployer(endpoint: &str, state_dir: &Path) -> Command {
    std::fs::create_dir_all(state_dir).expect("create state dir");
    let mut cmd = Command::new(deployer_path());
    cmd.env("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
        .env("AWS_REGION", TEST_REGION)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    cmd
}

/// The binary under test: cargo's path for integration tests; for the
/// benchmark (an example) `WEBHOOK_DEPLOY_BIN` or the debug binary beside it.
pub fn deployer_path() -> std::path::PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_webhook-deploy") {
        return p.into();
    }
    if let Ok(p) = std::env::var("WEBHOOK_DEPLOY_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/<name> -> target/<profile>/webhook-deploy
    exe.parent()
        .and_then(|d| d.parent())
        .expect("example binary lives in target/<profile>/examples")
        .join("webhook-deploy")
}
