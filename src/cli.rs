//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "webhook-deploy",
    version,
    about = "Deploy, inspect and tear down the serverless payment-webhook pipeline on AWS",
    after_help = "Exit codes: 0 success / in sync, 1 error, 2 `plan` or `status` found changes or drift."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or converge the stack, then print its outputs.
    Up,
    /// Show what `up` would change; changes nothing.
    Plan,
    /// Check every live resource: in sync, drifted or missing.
    Status,
    /// Delete everything the stack owns.
    Down,
    /// List the embedded Lambda packages: size and SHA-256 (no AWS call).
    Lambdas,
    /// Print the stack's outputs (no secrets unless --show-secrets).
    Outputs {
        /// Also print secret values.
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Stack name suffix: physical names are `<base>-<suffix>`.
    #[arg(long, global = true, default_value = "dev")]
    pub suffix: String,
    /// AWS region (default: the standard AWS chain, e.g. AWS_REGION or the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS shared-config profile.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send every AWS call to this endpoint (an AWS emulator).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Directory of the state files.
    #[arg(long, global = true, default_value = "state")]
    pub state_dir: PathBuf,
    /// Resources worked on at once.
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Do not ask for confirmation (`down`).
    #[arg(long, global = true)]
    pub yes: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}
