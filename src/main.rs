//! webhook-deploy: one binary that deploys, inspects and tears down the
//! serverless payment-webhook pipeline by calling the AWS APIs directly.

mod aws;
mod cli;
mod commands;
mod engine;
mod lambdas;
#[path = "../embedded-lambdas/src/layout.rs"]
mod layout;
mod local;
mod resources;
mod saved_plan;
mod settings;
mod stack;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            // Exit 2 means "changes found" here, so usage errors exit 1.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEBHOOK_DEPLOY_LOG")
                .unwrap_or_else(|_| "warn,aws_config=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // At least 4 workers: building a request with a Lambda zip in it (MBs
    // to encode and hash) holds a worker for a while, and the rest of the
    // graph should not wait for it on a 2-core machine.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(4);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let name = commands::command_name(&cli.command);
    // Commands whose answer on stdout is one JSON document give one on
    // failure too, so a script reading stdout always has something to parse
    // (`send` reports its own failures in its document).
    let json_error = cli.common.output == cli::Output::Json
        && matches!(
            cli.command,
            cli::Command::Up { .. }
                | cli::Command::Plan { .. }
                | cli::Command::Status
                | cli::Command::Down { .. }
                | cli::Command::Settings
                | cli::Command::Outputs { .. }
                | cli::Command::Lambdas
        );
    let suffix = cli.common.suffix.clone();
    match rt.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = aws::describe_error(&e);
            eprintln!("error: {message}");
            if json_error {
                let doc = serde_json::json!({
                    "command": name,
                    "stack": suffix,
                    "error": message,
                });
                println!("{doc:#}");
            }
            ExitCode::from(1)
        }
    }
}
