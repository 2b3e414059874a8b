//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "webhook-deploy",
    version,
    about = "Deploy, inspect and tear down the serverless payment-webhook pipeline on AWS",
    after_help = "Exit codes: 0 success / in sync, 1 error, 2 `plan` or `status` found changes or drift.\n\
                  Logs: WEBHOOK_DEPLOY_LOG=debug (a tracing filter, e.g. aws_smithy_runtime=trace) shows the SDK's tracing on stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create or converge the stack, then print its outputs. Shows the plan
    /// first and, on a terminal, asks before the first change (--yes skips).
    Up {
        /// Apply exactly this saved plan (`plan --out`); refused, with nothing
        /// changed, if the stack, its settings or its state moved since.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
    },
    /// Show what `up` would change; changes nothing.
    Plan {
        /// Also save the plan, for `up --plan FILE` (it holds no secret).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check every live resource: in sync, drifted or missing.
    Status,
    /// Delete everything the stack owns, except a table or bucket that holds
    /// data (kept, and named with the command that deletes it).
    Down {
        /// Also delete the events table's items and the archive's objects
        /// (asks for the suffix to be typed on a terminal).
        #[arg(long)]
        delete_data: bool,
    },
    /// Print the stack's effective settings and where each comes from
    /// (a flag of this run, recorded by an earlier `up`, or the default).
    Settings,
    /// List the embedded Lambda packages: size and SHA-256 (no AWS call).
    Lambdas,
    /// Print the stack's outputs (no secrets unless --show-secrets).
    Outputs {
        /// Also print secret values.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Run one invocation of a function's embedded binary on this machine
    /// (built-in Lambda Runtime API), against --endpoint-url or AWS.
    Invoke {
        /// receiver, processor or dead-letter.
        #[arg(value_parser = function_arg)]
        function: crate::stack::Function,
        /// The invocation event: a JSON file, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        event: String,
    },
    /// Run the pipeline on this machine: the table and bucket on the endpoint,
    /// POST /webhook on a local port, the stream polled like the event source
    /// mapping, failure records handed to the dead-letter handler. Ctrl-C stops it.
    Local {
        /// Port of the local front door; 0 picks a free one.
        #[arg(long, default_value_t = 8787)]
        port: u16,
    },
    /// Post a signed test event, then wait until it is processed and archived;
    /// prints the time each stage took (a smoke test for runbooks).
    Send {
        /// Send to the running `webhook-deploy local` instead of the deployed API.
        #[arg(long)]
        local: bool,
        /// How long to wait for the event to be processed and archived.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Print a shell completion script (no AWS call): e.g.
    /// `webhook-deploy completions bash > ~/.local/share/bash-completion/completions/webhook-deploy`.
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
}

fn function_arg(s: &str) -> Result<crate::stack::Function, String> {
    crate::stack::Function::from_key(s)
        .ok_or_else(|| format!("unknown function {s:?}: use receiver, processor or dead-letter"))
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
    /// Resources worked on at once (the reads that start every run go
    /// 4 × N at once; 1 keeps everything strictly one at a time).
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Do not ask for confirmation (`up`, `down`).
    #[arg(long, global = true)]
    pub yes: bool,
    /// Take over an existing object that has the stack's name but no
    /// `webhook-deploy:stack` tag (without it, `up` refuses such an object).
    #[arg(long, global = true)]
    pub adopt_untagged: bool,
}

/// The API front door and the alarms (they shape what `up` converges to,
/// so `plan` and `status` take them too). Every one of them is a setting
/// that stays: recorded by `up`, used by later runs until a flag changes it.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// POST /webhook without an API key (for senders that cannot add headers, such as Stripe and GitHub).
    #[arg(long, global = true, conflicts_with = "api_key")]
    pub no_api_key: bool,
    /// POST /webhook requires an API key (the default; undoes --no-api-key).
    #[arg(long, global = true)]
    pub api_key: bool,
    /// Requests per second allowed by the stage and the usage plan (default 10000).
    #[arg(long, global = true, value_parser = positive_rate)]
    pub throttle_rate: Option<f64>,
    /// Burst allowed by the stage and the usage plan (default 5000, the default account limit).
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    pub throttle_burst: Option<i32>,
    /// Subscribe this address to the alarm topic (stays until --no-alarm-email).
    #[arg(long, global = true, value_parser = email, conflicts_with = "no_alarm_email")]
    pub alarm_email: Option<String>,
    /// Unsubscribe the alarm address.
    #[arg(long, global = true)]
    pub no_alarm_email: bool,
}

pub(crate) fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

pub(crate) fn email(s: &str) -> Result<String, String> {
    let ok = s
        .split_once('@')
        .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
        // It is also recorded as a tag value, whose characters AWS limits.
        && s.chars()
            .all(|c| c.is_alphanumeric() || "+-=._:/@".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an email address"))
    }
}

/// The network and the functions (they shape what `up` converges to, so
/// `plan` and `status` take them too; settings that stay, like `ApiArgs`).
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Run the functions outside any VPC; the stack then owns no network resources
    /// (switching an existing stack removes them).
    #[arg(long, global = true, conflicts_with = "vpc")]
    pub no_vpc: bool,
    /// Run the functions in the stack's private VPC (the default; undoes --no-vpc).
    #[arg(long, global = true)]
    pub vpc: bool,
    /// Function memory in MB: `1024` for all, or `processor=1024` for one
    /// (receiver, processor, dead-letter); repeatable. Default 512.
    #[arg(long, global = true, value_name = "[FUNCTION=]MB", value_parser = per_function(128, 10240))]
    pub memory: Vec<(Option<crate::stack::Function>, i32)>,
    /// Function timeout in seconds, same form as --memory. Default 30.
    #[arg(long, global = true, value_name = "[FUNCTION=]SECONDS", value_parser = per_function(1, 900))]
    pub timeout: Vec<(Option<crate::stack::Function>, i32)>,
    /// How the receiver verifies senders' signatures (default standard-webhooks).
    #[arg(long, global = true, value_enum)]
    pub signature: Option<crate::stack::Signature>,
    /// Take the signing secret from this environment variable (default: generate
    /// one on the first up and keep it in the function's configuration). Only
    /// the variable's name is recorded, never its value.
    #[arg(
        long,
        global = true,
        value_name = "VAR",
        conflicts_with = "no_signing_secret_env"
    )]
    pub signing_secret_env: Option<String>,
    /// Stop taking the signing secret from a variable: the receiver keeps the
    /// secret it has (a new one is generated only if it has none).
    #[arg(long, global = true)]
    pub no_signing_secret_env: bool,
    /// How long `down` waits for Lambda's network interfaces to be released
    /// before deleting the subnets and security group (e.g. 45m, 1h).
    #[arg(long, global = true, default_value = "45m", value_parser = humantime::parse_duration)]
    pub eni_timeout: std::time::Duration,
}

type PerFunction = (Option<crate::stack::Function>, i32);

/// Parses `N` or `FUNCTION=N` with N in `min..=max`.
pub(crate) fn per_function(
    min: i32,
    max: i32,
) -> impl Fn(&str) -> Result<PerFunction, String> + Clone {
    move |s: &str| {
        let (f, n) = match s.split_once('=') {
            Some((k, n)) => {
                let f = crate::stack::Function::from_key(k).ok_or_else(|| {
                    format!("unknown function {k:?}: use receiver, processor or dead-letter")
                })?;
                (Some(f), n)
            }
            None => (None, s),
        };
        match n.parse::<i32>() {
            Ok(v) if (min..=max).contains(&v) => Ok((f, v)),
            _ => Err(format!("{n:?} is not a whole number from {min} to {max}")),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}
