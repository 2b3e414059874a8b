//! The pipeline without a deployment: the embedded Lambda binaries run on
//! this machine behind a built-in Lambda Runtime API, against
//! `--endpoint-url` (an emulator) or AWS with the operator's credentials.
//!
//! - `invoke`: one invocation of one function;
//! - `local`: the table and bucket on the endpoint, the front door on a
//!   local port, the stream polled like the event source mapping;
//! - `send`: a signed test event followed to its archive object.

pub mod gateway;
pub mod runtime;
pub mod send;
pub mod session;
pub mod stream;

use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::aws::{Clients, ConnectOptions};
use crate::cli::Cli;
use crate::engine::context::Cx;
use crate::engine::progress::Progress;
use crate::engine::state::{self, StackLock, State};
use crate::engine::{Engine, Mode};
use crate::resources::dynamodb_table::EventsTable;
use crate::resources::lambda_function::{self, SECRET_VAR};
use crate::resources::s3_bucket::ArchiveBucket;
use crate::stack::{self, ids, Function, Settings, Signature};

use runtime::{FunctionSpec, LocalFunction, LogSink, Outcome};
use session::{LocalPaths, LocalSecrets, Session};

/// Log lines of `local`'s parts: `(source, line)`.
pub type Logger = LogSink;

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn stderr_logger() -> Logger {
    Arc::new(|source: &str, line: &str| eprintln!("[{source}] {line}"))
}

async fn connect(cli: &Cli) -> Result<Clients> {
    Clients::connect(&ConnectOptions::from(&cli.common)).await
}

fn settings(cli: &Cli, aws: &Clients, opts: stack::StackOptions) -> Settings {
    Settings::new(&cli.common.suffix, aws, opts)
}

/// The spec of one function as the stack would deploy it.
fn function_spec(
    s: &Settings,
    f: Function,
    secret: Option<&str>,
    aws_env: &std::collections::BTreeMap<String, String>,
) -> Result<FunctionSpec> {
    let mut env = s.function_env(f);
    if let (Function::Receiver, Some(secret)) = (f, secret) {
        env.insert(SECRET_VAR.into(), secret.to_string());
    }
    Ok(FunctionSpec {
        label: f.key().to_string(),
        name: s.function_name(f),
        arn: s.function_arn(f),
        package: crate::lambdas::get(f.package())
            .with_context(|| format!("no embedded package for {}", f.key()))?,
        memory_mb: s.opts.memory_mb[f.index()],
        timeout: Duration::from_secs(s.opts.timeout_s[f.index()].max(1) as u64),
        env,
        aws_env: aws_env.clone(),
    })
}

/// `invoke <function> --event FILE|-`
pub async fn invoke(
    cli: &Cli,
    opts: stack::StackOptions,
    f: Function,
    event_arg: &str,
) -> Result<u8> {
    let event = read_event(event_arg)?;
    let aws = connect(cli).await?;
    let s = settings(cli, &aws, opts);
    let secret = if f == Function::Receiver && s.opts.signature != Signature::None {
        Some(receiver_secret(cli, &aws, &s).await?)
    } else {
        None
    };
    let spec = function_spec(&s, f, secret.as_deref(), &aws.function_aws_env().await?)?;
    let func = LocalFunction::new(spec, stderr_logger())?;
    let outcome = func.invoke(&event).await;
    func.shutdown().await;
    match outcome? {
        Outcome::Response(payload) => {
            println!("{}", pretty(&payload));
            Ok(crate::commands::EXIT_OK)
        }
        o @ Outcome::Error { .. } => {
            println!("{}", pretty(&o.payload()));
            if let Outcome::Error {
                error_type,
                message,
            } = o
            {
                eprintln!(
                    "error: the {} function failed: {error_type}: {message}",
                    f.key()
                );
            }
            Ok(crate::commands::EXIT_ERROR)
        }
    }
}

fn pretty(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned())
}

fn read_event(arg: &str) -> Result<Vec<u8>> {
    let bytes = if arg == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("cannot read the event from standard input")?;
        b
    } else {
        std::fs::read(arg).with_context(|| format!("cannot read the event file {arg}"))?
    };
    if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
        bail!("the event in {arg} is not JSON: pass a JSON document (a Lambda event) with --event");
    }
    Ok(bytes)
}

/// The receiver's signing secret for `invoke`: the operator's, else the
/// deployed function's, else the one `local` generated.
async fn receiver_secret(cli: &Cli, aws: &Clients, s: &Settings) -> Result<String> {
    if let Some(secret) = &s.opts.signing_secret {
        return Ok(secret.value.clone());
    }
    let cx = Cx::new(
        Arc::new(aws.clone()),
        Arc::new(s.clone()),
        Arc::new(Progress::new(&[], false)),
    );
    if let Some(secret) = lambda_function::deployed_signing_secret(&cx).await? {
        return Ok(secret);
    }
    let paths = LocalPaths::new(&cli.common.state_dir, &cli.common.suffix);
    if let Some(secret) =
        session::read_json::<LocalSecrets>(&paths.secrets)?.and_then(|l| l.signing_secret)
    {
        return Ok(secret);
    }
    bail!(
        "the receiver needs a signing secret: pass --signing-secret-env VAR, deploy the stack, or run `webhook-deploy local` once (it keeps one in {})",
        paths.secrets.display()
    )
}

/// `local --port N`
pub async fn local(cli: &Cli, opts: stack::StackOptions, port: u16) -> Result<u8> {
    let c = &cli.common;
    let paths = LocalPaths::new(&c.state_dir, &c.suffix);
    let _lock = StackLock::acquire(&paths.state.lock, "local")?;
    let prior = state::load(&paths.state.file)?;
    let aws = connect(cli).await?;
    let plain_http = aws
        .sdk
        .endpoint_url()
        .is_some_and(|u| u.starts_with("http://"));
    let s = settings(
        cli,
        &aws,
        stack::StackOptions {
            // On a plain-HTTP emulator the deny-non-TLS policy denies every
            // request (moto applies it without its condition).
            deny_insecure_transport: !plain_http,
            ..opts
        },
    );
    let state = match prior {
        Some(st) => {
            st.check_matches(&paths.state.file, &c.suffix, &aws.region, &aws.account)?;
            st
        }
        None => State::new(&c.suffix, &aws.region, &aws.account),
    };

    // What the functions need on the endpoint: the table and the bucket.
    println!(
        "local: stack '{}' in {} ({})",
        s.suffix,
        s.region,
        aws.sdk.endpoint_url().unwrap_or("AWS")
    );
    let resources: Vec<Arc<dyn crate::engine::resource::Resource>> = vec![
        Arc::new(EventsTable::new(ids::TABLE)),
        Arc::new(ArchiveBucket::new(ids::BUCKET)),
    ];
    let labels: Vec<(String, &'static str)> = resources
        .iter()
        .map(|r| (r.id().to_string(), r.kind()))
        .collect();
    let progress = Arc::new(Progress::new(&labels, c.output == crate::cli::Output::Text));
    let aws = Arc::new(aws);
    let cx = Cx::new(aws.clone(), Arc::new(s.clone()), progress);
    let stop = Arc::new(AtomicBool::new(false));
    let engine = Engine::new(
        resources,
        state,
        paths.state.file.clone(),
        cx,
        2,
        stop.clone(),
    )?;
    let report = engine.run(Mode::Up, None).await;
    if let Some(e) = report.errors().first() {
        bail!(
            "cannot prepare {} ({}): {}",
            e.id,
            e.kind,
            e.error.as_deref().unwrap_or("")
        );
    }
    let table = aws
        .dynamodb
        .describe_table()
        .table_name(s.table_name())
        .send()
        .await
        .context("dynamodb:DescribeTable failed")?;
    let stream_arn = table
        .table()
        .and_then(|t| t.latest_stream_arn())
        .context("the events table has no stream")?
        .to_string();

    // Secrets of the local front door: the operator's, else kept from the
    // last run, else new (mode 0600 file, never printed).
    let mut secrets: LocalSecrets = session::read_json(&paths.secrets)?.unwrap_or_default();
    let mut changed = false;
    let signing_secret = match &s.opts.signing_secret {
        Some(op) => Some(op.value.clone()),
        None if s.opts.signature == Signature::None => None,
        None => Some(
            secrets
                .signing_secret
                .clone()
                .filter(|x| lambda_function::secret_fits(s.opts.signature, x))
                .unwrap_or_else(|| {
                    changed = true;
                    let new = lambda_function::generate_secret();
                    secrets.signing_secret = Some(new.clone());
                    new
                }),
        ),
    };
    let api_key = if s.opts.api_key_required {
        Some(secrets.api_key.clone().unwrap_or_else(|| {
            changed = true;
            let k = uuid::Uuid::new_v4().simple().to_string();
            secrets.api_key = Some(k.clone());
            k
        }))
    } else {
        None
    };
    if changed {
        session::write_json(&paths.secrets, &secrets, 0o600)?;
    }

    let log = stderr_logger();
    let aws_env = aws.function_aws_env().await?;
    let make = |f: Function| -> Result<Arc<LocalFunction>> {
        Ok(Arc::new(LocalFunction::new(
            function_spec(&s, f, signing_secret.as_deref(), &aws_env)?,
            log.clone(),
        )?))
    };
    let (receiver, processor, dead_letter) = (
        make(Function::Receiver)?,
        make(Function::Processor)?,
        make(Function::DeadLetter)?,
    );

    let listener = gateway::bind(port).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/webhook");
    let gw = Arc::new(gateway::Gateway {
        receiver: receiver.clone(),
        api_key,
        account: s.account.clone(),
        log: log.clone(),
    });
    let server = tokio::spawn(gateway::serve(listener, gw));
    session::write_json(
        &paths.session,
        &Session {
            pid: std::process::id(),
            url: url.clone(),
            region: s.region.clone(),
            endpoint_url: aws.sdk.endpoint_url().map(String::from),
            table_name: s.table_name(),
            bucket_name: s.bucket_name(),
            signature: s.opts.signature.as_str().into(),
            api_key_required: s.opts.api_key_required,
            signing_secret_env: s
                .opts
                .signing_secret
                .as_ref()
                .and_then(|x| x.source.strip_prefix('$'))
                .map(str::to_string),
        },
        0o644,
    )?;
    let poller = stream::Poller {
        streams: aws.dynamodbstreams.clone(),
        s3: aws.s3.clone(),
        region: s.region.clone(),
        stream_arn,
        bucket: s.bucket_name(),
        bucket_arn: s.bucket_arn(),
        processor: processor.clone(),
        dead_letter: dead_letter.clone(),
        settings: stream::MappingSettings::default(),
        checkpoint_path: paths.stream.clone(),
        log: log.clone(),
        stop: stop.clone(),
    };
    let mut polling = tokio::spawn(poller.run());

    println!(
        "local: POST {url} (signature {})",
        s.opts.signature.as_str()
    );
    if s.opts.api_key_required {
        println!(
            "local: requests need the x-api-key header; the key is in {}",
            paths.secrets.display()
        );
    }
    println!(
        "local: try `webhook-deploy send --local --suffix {}{}`; Ctrl-C stops",
        s.suffix,
        if c.state_dir != std::path::Path::new("state") {
            format!(" --state-dir {}", c.state_dir.display())
        } else {
            String::new()
        }
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        r = &mut polling => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("the stream poller stopped: {e}")),
        },
    };
    eprintln!("local: stopping (the batch in hand finishes, the stream position is saved)");
    server.abort();
    stop.store(true, Ordering::SeqCst);
    if !polling.is_finished() {
        // Bounded: one batch at most runs the processor's timeout, with retries.
        let _ = tokio::time::timeout(Duration::from_secs(60), &mut polling).await;
    }
    for f in [&receiver, &processor, &dead_letter] {
        f.shutdown().await;
    }
    let _ = std::fs::remove_file(&paths.session);
    outcome?;
    println!("local: stopped");
    Ok(crate::commands::EXIT_OK)
}
