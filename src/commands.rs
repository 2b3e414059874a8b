//! The commands: wiring CLI → clients → engine → output.

use crate::aws::{partition_of, Clients, ConnectOptions, Identity};
use crate::cli::{Cli, Command, Output};
use crate::engine::context::Cx;
use crate::engine::progress::Progress;
use crate::engine::state::{self, StackLock, State, StatePaths};
use crate::engine::{Action, Engine, Entry, Mode, Report};
use crate::saved_plan::{self, SavedPlan, StateMark};
use crate::settings::{self, Resolved};
use crate::stack::{self, ids, Settings};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;
/// Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

pub async fn run(cli: Cli) -> Result<u8> {
    let c = &cli.common;
    stack::validate_suffix(&c.suffix)?;
    let paths = StatePaths::new(&c.state_dir, &c.suffix);
    match cli.command {
        Command::Completions { shell } => completions(shell),
        Command::Lambdas => lambdas(c.output),
        Command::Outputs { show_secrets } => outputs(&cli, &paths, show_secrets).await,
        Command::Up { .. } => reconcile(&cli, &paths, Mode::Up).await,
        // A saved plan is made from the reads `up` starts with, by an `up`
        // that stops before its first change.
        Command::Plan { out: Some(_) } => reconcile(&cli, &paths, Mode::Up).await,
        Command::Plan { out: None } => reconcile(&cli, &paths, Mode::Plan).await,
        Command::Status => reconcile(&cli, &paths, Mode::Plan).await,
        Command::Down { .. } => reconcile(&cli, &paths, Mode::Down).await,
        Command::Settings => show_settings(&cli, &paths).await,
        Command::Invoke {
            function,
            ref event,
        } => {
            let opts = local_options(&cli, &paths)?;
            crate::local::invoke(&cli, opts, function, event).await
        }
        Command::Local { port } => {
            let opts = local_options(&cli, &paths)?;
            crate::local::local(&cli, opts, port).await
        }
        Command::Send { local, wait } => crate::local::send::run(&cli, local, wait).await,
    }
}

/// Prints clap_complete's script for `shell`.
fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut script);
    let mut script = String::from_utf8(script)?;
    if shell == clap_complete::Shell::Bash {
        // clap_complete spells the per-subcommand case arms of a hyphenated
        // binary differently from the state its loop builds (clap issue
        // 6421), so no subcommand's flags would complete: spell them alike.
        let escaped = name.replace('-', "__");
        let wrong = name.replace('-', "__subcmd__");
        script = script.replace(
            &format!("{wrong}__subcmd__"),
            &format!("{escaped}__subcmd__"),
        );
    }
    use std::io::Write;
    std::io::stdout().write_all(script.as_bytes())?;
    Ok(EXIT_OK)
}

/// The first of SIGINT, SIGTERM and SIGHUP to arrive (`None` if they cannot
/// be watched).
async fn termination() -> Option<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut hup = signal(SignalKind::hangup()).ok()?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.ok().map(|_| "SIGINT"),
        _ = term.recv() => Some("SIGTERM"),
        _ = hup.recv() => Some("SIGHUP"),
    }
}

pub fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::Up { .. } => "up",
        Command::Plan { .. } => "plan",
        Command::Status => "status",
        Command::Down { .. } => "down",
        Command::Settings => "settings",
        Command::Outputs { .. } => "outputs",
        Command::Lambdas => "lambdas",
        Command::Invoke { .. } => "invoke",
        Command::Local { .. } => "local",
        Command::Send { .. } => "send",
        Command::Completions { .. } => "completions",
    }
}

async fn reconcile(cli: &Cli, paths: &StatePaths, mode: Mode) -> Result<u8> {
    let c = &cli.common;
    let name = command_name(&cli.command);
    let delete_data = deletes_data(cli);
    if mode == Mode::Down && !c.yes && !std::io::stdin().is_terminal() {
        bail!("down deletes every resource of stack '{}' and needs confirmation: pass --yes when not running interactively", c.suffix);
    }
    // Mutating runs hold the lock from before reading state until the end.
    let _lock = match mode {
        Mode::Up | Mode::Down => Some(StackLock::acquire(&paths.lock, name)?),
        Mode::Plan => None,
    };
    let prior = state::load(&paths.file)?;
    let flags = settings::flags(&cli.api, &cli.compute)?;
    let (saved, plan_out) = match &cli.command {
        Command::Up { plan: Some(p) } => (Some((p.clone(), SavedPlan::load(p, &c.suffix)?)), None),
        Command::Plan { out: Some(p) } => (None, Some(p.clone())),
        _ => (None, None),
    };
    let mark = prior.as_ref().map(StateMark::of);
    if let Some((path, plan)) = &saved {
        if !flags.is_empty() {
            bail!("up --plan applies the settings saved in plan {}: drop the setting flags (or make a new plan with them)", path.display());
        }
        plan.check(path, "the state file", &plan.state, &mark)?;
    }
    let prepared = Clients::prepare(&ConnectOptions::from(c)).await?;
    if let Some((path, plan)) = &saved {
        plan.check(
            path,
            "the region",
            &plan.region,
            &prepared.region().to_string(),
        )?;
    }
    // The settings of this run: the record with the flags over it, or what
    // a saved plan applies (made on top of the same record).
    let resolve = |recorded: &settings::Recorded| match &saved {
        Some((path, plan)) => {
            plan.check(
                path,
                "the recorded settings",
                &plan.recorded_before,
                recorded,
            )?;
            settings::resolve(&plan.settings, &[])
        }
        None => settings::resolve(recorded, &flags),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let build = |who: &Identity, state: State, resolved: &Resolved, held: bool| {
        let aws = prepared.clients(who);
        let settings = Settings::new(&c.suffix, &aws, stack_options(cli, resolved, mode)?);
        // Deleting data is asked for on a terminal even with --yes.
        if mode == Mode::Down && (!c.yes || (delete_data && std::io::stdin().is_terminal())) {
            confirm_down(&settings, delete_data)?;
        }
        let resources = stack::define(&settings);
        let labels: Vec<(String, &'static str)> = resources
            .iter()
            .map(|r| (r.id().to_string(), r.kind()))
            .collect();
        let verbose = mode != Mode::Plan && plan_out.is_none() && c.output == Output::Text;
        let progress = Arc::new(if held {
            Progress::held(&labels, verbose)
        } else {
            Progress::new(&labels, verbose)
        });
        let cx = Cx::new(Arc::new(aws), Arc::new(settings.clone()), progress.clone())
            .with_stop(stop.clone());
        let engine = Engine::new(
            resources,
            state,
            paths.file.clone(),
            cx,
            c.parallel as usize,
            stop.clone(),
        )?;
        if mode == Mode::Up {
            engine.record_settings(resolved.recorded());
        }
        anyhow::Ok((settings, progress, engine))
    };
    // A recorded stack names its account: its reads go out beside the
    // account lookup instead of after it, and nothing is changed or
    // reported until the lookup agrees. (`down` deletes from its first
    // step, and `--parallel 1` is one call at a time.)
    let overlap = matches!(mode, Mode::Up | Mode::Plan) && c.parallel > 1;
    // What the file says of itself is checked before any call.
    if let Some(s) = &prior {
        s.check_suffix(&paths.file, &c.suffix)?;
        s.check_region(&paths.file, prepared.region())?;
    }
    let (settings, progress, engine, reads, resolved, recorded) = match prior {
        // The file records the settings: nothing to ask AWS before the reads.
        Some(s) if overlap && s.settings.is_some() => {
            let recorded = s.settings.clone().unwrap_or_default();
            let resolved = resolve(&recorded)?;
            let assumed = Identity {
                account: s.account.clone(),
                partition: partition_of(prepared.region()).to_string(),
            };
            let (settings, progress, engine) = build(&assumed, s.clone(), &resolved, true)?;
            // The lookup's request goes first; the reads follow at once.
            let (who, reads) = tokio::join!(prepared.identity(), engine.start_reads(mode));
            let checked = who.and_then(|who| {
                s.check_account(&paths.file, &who.account)?;
                Ok(who)
            });
            match checked {
                Ok(who) if who == assumed => {
                    progress.release();
                    (settings, progress, engine, Some(reads), resolved, recorded)
                }
                // A partition the region table does not know: start over.
                Ok(who) => {
                    drop(reads);
                    progress.clear();
                    let (settings, progress, engine) = build(&who, s, &resolved, false)?;
                    (settings, progress, engine, None, resolved, recorded)
                }
                Err(e) => {
                    progress.clear();
                    return Err(e);
                }
            }
        }
        prior => {
            let who = prepared.identity().await?;
            let state = match prior {
                Some(s) => {
                    s.check_account(&paths.file, &who.account)?;
                    s
                }
                None => State::new(&c.suffix, prepared.region(), &who.account),
            };
            let recorded = match &state.settings {
                Some(r) => r.clone(),
                // No record in the file (lost, or written before settings
                // were recorded): the deployed stack keeps them.
                None if mode == Mode::Down => Default::default(),
                None => recover_settings(&prepared.clients(&who), &c.suffix).await?,
            };
            let resolved = resolve(&recorded)?;
            let (settings, progress, engine) = build(&who, state, &resolved, false)?;
            (settings, progress, engine, None, resolved, recorded)
        }
    };
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // A CI cancel or a closed terminal (SIGTERM, SIGHUP) stops the
            // run the way Ctrl-C does, so the state file gets its last save.
            if let Some(signal) = termination().await {
                eprintln!("interrupted ({signal}): letting calls in flight finish and saving state; nothing new starts, waits end (a second signal exits at once)");
                stop.store(true, Ordering::SeqCst);
            }
            // A second signal: out now. Every save is atomic and intents go
            // to disk before their calls, so the next run finds what this
            // one started.
            if let Some(signal) = termination().await {
                eprintln!("interrupted again ({signal}): exiting now; run the command again to finish (it finds what was started by name and tags)");
                std::process::exit(130);
            }
        })
    };
    if mode == Mode::Up {
        let shown = ShowPlan {
            settings: settings.clone(),
            resolved: resolved.clone(),
            recorded,
            mark,
            saved,
            plan_out: plan_out.clone(),
            progress: progress.clone(),
            text: c.output == Output::Text,
            ask: !c.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        };
        engine.set_gate(Arc::new(move |preview| shown.gate(preview)));
    }
    let report = engine.run(mode, reads).await;
    watcher.abort();
    if mode == Mode::Plan || plan_out.is_some() {
        progress.clear();
    }
    match report.halted.clone() {
        Some(Err(why)) => {
            progress.clear();
            bail!("{why}");
        }
        // `plan --out`: the plan is saved; shown like `plan`.
        Some(Ok(())) => {
            match c.output {
                Output::Text => print_plan(&settings, &resolved, &report),
                Output::Json => print_json("plan", &settings, &resolved, &report, &engine.state())?,
            }
            return Ok(if report.has_changes() {
                EXIT_CHANGES
            } else {
                EXIT_OK
            });
        }
        None => {}
    }
    let final_state = engine.state();
    match (&cli.command, c.output) {
        (Command::Status, Output::Text) => print_status(&settings, &report),
        (Command::Plan { .. }, Output::Text) => print_plan(&settings, &resolved, &report),
        (_, Output::Text) => {
            print_summary(name, &report);
            print_kept(c, &report);
        }
        (_, Output::Json) => print_json(name, &settings, &resolved, &report, &final_state)?,
    }
    if !report.errors().is_empty() {
        if c.output == Output::Text {
            eprintln!("\n{} failed:", name);
            for e in report.errors() {
                eprintln!(
                    "  {} ({}): {}",
                    e.id,
                    e.kind,
                    e.error.as_deref().unwrap_or("")
                );
            }
        }
        return Ok(if report.interrupted {
            EXIT_INTERRUPTED
        } else {
            EXIT_ERROR
        });
    }
    if mode == Mode::Up && c.output == Output::Text {
        println!();
        let out = outputs_json(&final_state);
        print_outputs_text(&out);
        print_curl_example(c, &out);
    }
    let drift_found = match cli.command {
        // Adoption only fills the state file: the live stack is in sync.
        Command::Status => report.entries.iter().any(|e| {
            matches!(
                e.action,
                Action::Update | Action::Create | Action::AfterDependencies | Action::Delete
            )
        }),
        Command::Plan { .. } => report.has_changes(),
        _ => false,
    };
    Ok(if drift_found { EXIT_CHANGES } else { EXIT_OK })
}

/// What `up` does with its plan before its first change: save it (`plan
/// --out`), hold it against a saved one (`up --plan`), show it, and on a
/// terminal ask.
struct ShowPlan {
    settings: Settings,
    resolved: Resolved,
    recorded: settings::Recorded,
    mark: Option<StateMark>,
    saved: Option<(std::path::PathBuf, SavedPlan)>,
    plan_out: Option<std::path::PathBuf>,
    progress: Arc<Progress>,
    text: bool,
    ask: bool,
}

impl ShowPlan {
    fn gate(&self, preview: &[Entry]) -> Result<bool> {
        let s = &self.settings;
        if let Some(out) = &self.plan_out {
            SavedPlan::new(
                &s.suffix,
                &s.region,
                &s.account,
                self.mark.clone(),
                self.recorded.clone(),
                self.resolved.recorded(),
                preview,
            )
            .save(out)?;
            return Ok(false);
        }
        if let Some((path, plan)) = &self.saved {
            plan.check(path, "the account", &plan.account, &s.account)?;
            plan.check_steps(path, preview)?;
        }
        if !saved_plan::changes(preview) {
            return Ok(true);
        }
        if self.text {
            let text = plan_text(s, &self.resolved, preview, true);
            self.progress.suspend(|| eprint!("{text}"));
        }
        // A saved plan was looked at when it was made.
        if self.ask && self.saved.is_none() {
            let answer = self.progress.suspend(|| {
                eprint!(
                    "Apply these changes to stack '{}' in {}? Type yes to go on: ",
                    s.suffix, s.region
                );
                std::io::stderr().flush().ok();
                let mut answer = String::new();
                tokio::task::block_in_place(|| std::io::stdin().lock().read_line(&mut answer))
                    .map(|_| answer)
            });
            if answer.context("cannot read the confirmation")?.trim() != "yes" {
                bail!("not confirmed; nothing was changed");
            }
        }
        Ok(true)
    }
}

/// The stack options of this run's settings, checked before anything is
/// called. The signing secret is read from the variable the settings name;
/// its value never appears in a message.
fn stack_options(cli: &Cli, resolved: &Resolved, mode: Mode) -> Result<stack::StackOptions> {
    let opts = resolved.options();
    let signing_secret = match (resolved.signing_secret_env(), mode) {
        // `down` deletes whatever exists, and `none` verifies nothing: no
        // secret needed.
        (_, Mode::Down) | (None, _) => None,
        _ if opts.signature == stack::Signature::None => None,
        (Some((var, source)), _) => match std::env::var(var).ok().filter(|v| !v.is_empty()) {
            Some(value) => {
                let secret = stack::Secret {
                    value,
                    source: format!("${var}"),
                };
                crate::resources::lambda_function::LambdaFunction::check_secret(
                    opts.signature,
                    &secret,
                )?;
                Some(secret)
            }
            None if source == settings::Source::Flag => {
                bail!("--signing-secret-env {var}: the environment variable {var} is not set or empty")
            }
            // Recorded by an earlier run on a machine that had it: the
            // receiver keeps the secret it has rather than getting a new one.
            None => {
                eprintln!("note: the stack takes its signing secret from ${var}, which is not set here: the receiver keeps the secret it has (set {var} to check or change it)");
                None
            }
        },
    };
    Ok(stack::StackOptions {
        // `down` removes the network too, whatever the setting says.
        vpc: opts.vpc || mode == Mode::Down,
        signing_secret,
        eni_timeout: cli.compute.eni_timeout,
        delete_data: deletes_data(cli),
        adopt_untagged: cli.common.adopt_untagged,
        ..opts
    })
}

/// `down --delete-data`: the table's items and the archive's objects go too.
fn deletes_data(cli: &Cli) -> bool {
    matches!(cli.command, Command::Down { delete_data: true })
}

/// The recorded settings of a stack whose state file has none: the tags of
/// its deployed receiver, or none at all.
async fn recover_settings(aws: &Clients, suffix: &str) -> Result<settings::Recorded> {
    let s = Settings::new(suffix, aws, stack::StackOptions::default());
    Ok(
        crate::resources::lambda_function::recorded_settings(aws, &s)
            .await?
            .unwrap_or_default(),
    )
}

/// `invoke` and `local`: the state file's recorded settings (if any) with
/// this run's flags over them.
fn local_options(cli: &Cli, paths: &StatePaths) -> Result<stack::StackOptions> {
    let recorded = state::load(&paths.file)?
        .and_then(|s| s.settings)
        .unwrap_or_default();
    let resolved = settings::resolve(&recorded, &settings::flags(&cli.api, &cli.compute)?)?;
    stack_options(cli, &resolved, Mode::Up)
}

/// `settings`: every setting, its value and where it comes from.
async fn show_settings(cli: &Cli, paths: &StatePaths) -> Result<u8> {
    let c = &cli.common;
    let prior = state::load(&paths.file)?;
    if let Some(s) = &prior {
        s.check_suffix(&paths.file, &c.suffix)?;
        if let Some(region) = &c.region {
            s.check_region(&paths.file, region)?;
        }
    }
    let (recorded, origin) = match prior.as_ref().and_then(|s| s.settings.clone()) {
        Some(r) => (r, format!("state file {}", paths.file.display())),
        None => {
            let aws = Clients::connect(&ConnectOptions::from(c)).await?;
            if let Some(s) = &prior {
                s.check_account(&paths.file, &aws.account)?;
            }
            let r = recover_settings(&aws, &c.suffix).await?;
            (r, "the deployed receiver's tags".to_string())
        }
    };
    let resolved = settings::resolve(&recorded, &settings::flags(&cli.api, &cli.compute)?)?;
    match c.output {
        Output::Json => {
            let doc = json!({
                "command": "settings",
                "stack": c.suffix,
                "recorded_in": origin,
                "settings": resolved.to_json(),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        Output::Text => {
            println!("Settings of stack {} (recorded in {origin}):", c.suffix);
            for s in &resolved.settings {
                println!(
                    "  {:<20} {:<28} {}",
                    s.key,
                    settings::describe(&s.value),
                    s.source.as_str()
                );
            }
        }
    }
    Ok(EXIT_OK)
}

fn confirm_down(s: &Settings, delete_data: bool) -> Result<()> {
    let data = if delete_data {
        "including the events table's items and every object in the archive bucket (--delete-data)"
    } else {
        "except the events table and the archive bucket if they hold data (--delete-data deletes those too)"
    };
    eprint!(
        "This deletes every resource of stack '{}' in {} (account {}), {data}.\nType the stack suffix to confirm: ",
        s.suffix, s.region, s.account
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the confirmation")?;
    if answer.trim() != s.suffix {
        bail!("not confirmed; nothing was deleted");
    }
    Ok(())
}

fn print_summary(name: &str, r: &Report) {
    let mut parts = Vec::new();
    for (label, a) in [
        ("created", Action::Create),
        ("updated", Action::Update),
        ("adopted", Action::Adopt),
        ("unchanged", Action::NoChange),
        ("deleted", Action::Delete),
        ("already gone", Action::Gone),
        ("kept", Action::Kept),
        ("failed", Action::Failed),
        ("skipped", Action::Skipped),
        ("not started", Action::Cancelled),
    ] {
        let n = r.count(a);
        let always = if name == "down" {
            &["deleted"][..]
        } else {
            &["created", "updated", "unchanged"][..]
        };
        if n > 0 || always.contains(&label) {
            parts.push(format!("{n} {label}"));
        }
    }
    eprintln!(
        "{name}: {} in {:.1}s",
        parts.join(", "),
        r.elapsed.as_secs_f64()
    );
}

/// What `down` kept, why, and the command that deletes it.
fn print_kept(c: &crate::cli::Common, r: &Report) {
    let kept: Vec<&Entry> = r
        .entries
        .iter()
        .filter(|e| e.action == Action::Kept)
        .collect();
    if kept.is_empty() {
        return;
    }
    eprintln!("kept, because they hold data:");
    for e in &kept {
        eprintln!(
            "  {} ({}): {}",
            e.id,
            e.kind,
            e.note.as_deref().unwrap_or("")
        );
    }
    eprintln!(
        "to delete them and their data: webhook-deploy down --suffix {} --delete-data{}",
        c.suffix,
        state_dir_arg(c)
    );
}

/// ` --state-dir DIR` when it is not the default.
fn state_dir_arg(c: &crate::cli::Common) -> String {
    if c.state_dir != std::path::Path::new("state") {
        format!(" --state-dir '{}'", c.state_dir.display())
    } else {
        String::new()
    }
}

fn drift_lines(e: &Entry) -> Vec<String> {
    e.drift
        .iter()
        .map(|d| format!("      {}: {} -> {}", d.field, d.have, d.want))
        .collect()
}

fn print_plan(s: &Settings, resolved: &Resolved, r: &Report) {
    print!("{}", plan_text(s, resolved, &r.entries, false));
}

/// The plan as text; `only_changes` leaves out what stays as it is.
fn plan_text(s: &Settings, resolved: &Resolved, entries: &[Entry], only_changes: bool) -> String {
    let mut out = format!(
        "Plan for stack {} ({}, account {}):\n",
        s.suffix, s.region, s.account
    );
    let changes = resolved.changes();
    if !changes.is_empty() {
        out += "  Settings:\n";
        for ch in changes {
            out += &format!(
                "  ~ {:<22} {} -> {}\n",
                ch.key,
                settings::describe(&ch.before),
                settings::describe(&ch.value)
            );
        }
        out += "  Resources:\n";
    }
    for e in entries {
        let (sign, what) = match e.action {
            Action::Create => ("+", "create".to_string()),
            Action::Update => ("~", "update".to_string()),
            Action::Adopt => ("=", "adopt (exists, not in state)".to_string()),
            Action::NoChange if only_changes => continue,
            Action::NoChange => (" ", "no change".to_string()),
            Action::Delete => (
                "-",
                "delete (not part of the stack with these options)".to_string(),
            ),
            Action::AfterDependencies => (
                "?",
                match &e.error {
                    Some(why) => format!("decided after dependencies ({why})"),
                    None => "decided after dependencies".to_string(),
                },
            ),
            _ => ("!", format!("{:?}", e.action)),
        };
        out += &format!("  {sign} {:<22} {:<15} {what}\n", e.id, e.kind);
        for l in drift_lines(e) {
            out += &l;
            out += "\n";
        }
    }
    out + &plan_summary(entries) + "\n"
}

/// The plan's last line: every row above is counted in it.
fn plan_summary(entries: &[Entry]) -> String {
    let count = |a: Action| entries.iter().filter(|e| e.action == a).count();
    let mut line = format!(
        "Plan: {} to create, {} to update, {} to adopt, {} to delete, {} unchanged",
        count(Action::Create),
        count(Action::Update),
        count(Action::Adopt),
        count(Action::Delete),
        count(Action::NoChange)
    );
    let later = count(Action::AfterDependencies);
    if later > 0 {
        line += &format!(", {later} decided after dependencies");
    }
    line + "."
}

fn status_word(a: &Action) -> &'static str {
    match a {
        Action::NoChange | Action::Adopt => "in_sync",
        Action::Update => "drifted",
        Action::Create => "missing",
        // Exists but the stack's options leave it out (e.g. `--no-vpc`).
        Action::Delete => "extra",
        Action::AfterDependencies => "unknown",
        _ => "error",
    }
}

fn print_status(s: &Settings, r: &Report) {
    println!("Stack {} ({}, account {}):", s.suffix, s.region, s.account);
    for e in &r.entries {
        let note = if e.action == Action::Adopt {
            " (not in state; adopted on next up)"
        } else {
            ""
        };
        println!(
            "  {:<8} {:<22} {:<15} {}{note}",
            status_word(&e.action).replace('_', " "),
            e.id,
            e.kind,
            e.physical_id.as_deref().unwrap_or("-")
        );
        for l in drift_lines(e) {
            println!("{l}");
        }
    }
    println!("{}", status_summary(r));
}

/// The status's last line. "unknown": inside or behind something missing,
/// so it could not be looked for (it may exist); not counted as missing.
fn status_summary(r: &Report) -> String {
    // Resources to be removed (options changed) count as drift.
    let drifted = r.count(Action::Update) + r.count(Action::Delete);
    let missing = r.count(Action::Create);
    let unknown = r.count(Action::AfterDependencies);
    let errors = r.errors().len();
    if drifted + missing + unknown + errors == 0 {
        return "In sync.".into();
    }
    let mut parts = vec![format!("{drifted} drifted"), format!("{missing} missing")];
    if unknown > 0 {
        parts.push(format!(
            "{unknown} unknown until what they depend on exists"
        ));
    }
    if errors > 0 {
        parts.push(format!("{errors} could not be checked"));
    }
    parts.join(", ") + "."
}

fn print_json(name: &str, s: &Settings, resolved: &Resolved, r: &Report, st: &State) -> Result<()> {
    let resources: Vec<serde_json::Value> = r
        .entries
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if name == "status" {
                v["status"] = json!(status_word(&e.action));
            }
            v
        })
        .collect();
    let mut out = json!({
        "command": name,
        "stack": s.suffix,
        "region": s.region,
        "account": s.account,
        "resources": resources,
        "elapsed_seconds": r.elapsed.as_secs_f64(),
        // Seconds since the Unix epoch when the walk began, so a tool can
        // line the resources' `started` offsets up with other clocks.
        "started_unix": r
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
        "changes": r.has_changes(),
        "errors": r.errors().len(),
    });
    if name != "down" {
        out["settings"] = resolved.to_json();
        out["setting_changes"] = json!(resolved
            .changes()
            .iter()
            .map(|c| json!({"key": c.key, "from": c.before, "to": c.value}))
            .collect::<Vec<_>>());
    }
    if name == "up" && r.errors().is_empty() {
        out["outputs"] = outputs_json(st);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// The stack's outputs from the state file: no secrets (state has none).
pub(crate) fn outputs_json(st: &State) -> serde_json::Value {
    let rec = |id: &str| st.resources.get(id);
    let attr = |id: &str, key: &str| rec(id).and_then(|r| r.attrs.get(key)).cloned();
    let receiver = rec(&ids::function(stack::Function::Receiver));
    // The receiver layer records the scheme as an attribute or in the
    // function's environment.
    let scheme = receiver.and_then(|r| {
        r.attrs.get("signature_scheme").cloned().or_else(|| {
            r.applied
                .pointer("/environment/SIGNATURE_SCHEME")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
    });
    json!({
        "apiUrl": attr(ids::API, "id").map(|id| stack::api_url(&id, &st.region)),
        "apiKeyId": attr(ids::API_KEY, "id"),
        "apiKeyRequired": rec(ids::API_METHOD).and_then(|r| r.applied.get("api_key_required")).and_then(|v| v.as_bool()),
        "signatureScheme": scheme,
        "tableName": attr(ids::TABLE, "name"),
        "bucketName": attr(ids::BUCKET, "name"),
        "alarmTopicArn": attr(ids::ALARM_TOPIC, "arn"),
    })
}

fn print_outputs_text(out: &serde_json::Value) {
    if let serde_json::Value::Object(m) = out {
        for (k, v) in m {
            match v {
                serde_json::Value::String(s) => println!("{k} = {s}"),
                serde_json::Value::Bool(b) => println!("{k} = {b}"),
                _ => {}
            }
        }
    }
}

/// A request senders can paste to try the endpoint. The key is fetched by
/// a nested `outputs --show-secrets` so it never lands in `up`'s output.
fn print_curl_example(c: &crate::cli::Common, out: &serde_json::Value) {
    let Some(url) = out["apiUrl"].as_str() else {
        return;
    };
    let mut outputs_cmd = format!(
        "webhook-deploy outputs --suffix {}{}",
        c.suffix,
        state_dir_arg(c)
    );
    if let Some(r) = &c.region {
        outputs_cmd.push_str(&format!(" --region {r}"));
    }
    if let Some(p) = &c.profile {
        outputs_cmd.push_str(&format!(" --profile {p}"));
    }
    println!("\nTry it:");
    if let Some(scheme) = out["signatureScheme"].as_str().filter(|s| *s != "none") {
        println!("  # the receiver verifies {scheme} signatures: add the scheme's signature headers, or it answers 401");
    }
    println!("  curl -sS -X POST '{url}' \\");
    println!("    -H 'Content-Type: application/json' \\");
    if out["apiKeyRequired"].as_bool() != Some(false) {
        println!("    -H \"x-api-key: $({outputs_cmd} --show-secrets | sed -n 's/^apiKeyValue = //p')\" \\");
    }
    println!("    -d '{{\"eventId\":\"evt-test-1\",\"type\":\"test.ping\"}}'");
}

/// Secret values, read from AWS on demand (never from state).
async fn add_secrets(
    cli: &Cli,
    st: &State,
    path: &std::path::Path,
    out: &mut serde_json::Value,
) -> Result<()> {
    let c = &cli.common;
    let aws = Clients::connect(&ConnectOptions {
        region: c.region.clone().or(Some(st.region.clone())),
        ..ConnectOptions::from(c)
    })
    .await?;
    // The secrets are read by name: from another account's stack of the
    // same name they would be someone else's.
    st.check_matches(path, &c.suffix, &aws.region, &aws.account)?;
    if let Some(key_id) = st
        .resources
        .get(ids::API_KEY)
        .map(|r| r.physical_id.clone())
        .filter(|k| !k.is_empty())
    {
        let key = aws
            .apigateway
            .get_api_key()
            .api_key(&key_id)
            .include_value(true)
            .send()
            .await
            .with_context(|| format!("cannot read API key {key_id} (apigateway:GetApiKey)"))?;
        out["apiKeyValue"] = json!(key.value());
    }
    let settings = Settings::new(&c.suffix, &aws, stack::StackOptions::default());
    let cx = Cx::new(
        Arc::new(aws),
        Arc::new(settings),
        Arc::new(Progress::new(&[], false)),
    );
    if let Some(secret) = crate::resources::lambda_function::deployed_signing_secret(&cx).await? {
        out["signingSecret"] = json!(secret);
    }
    Ok(())
}

async fn outputs(cli: &Cli, paths: &StatePaths, show_secrets: bool) -> Result<u8> {
    let Some(st) = state::load(&paths.file)? else {
        bail!(
            "no state file {}: run `webhook-deploy up --suffix {}` first (or pass the --state-dir that holds it)",
            paths.file.display(),
            paths.file.file_stem().and_then(|s| s.to_str()).unwrap_or("dev")
        );
    };
    st.check_suffix(&paths.file, &cli.common.suffix)?;
    if let Some(region) = &cli.common.region {
        st.check_region(&paths.file, region)?;
    }
    if st.resources.values().all(|r| r.physical_id.is_empty()) {
        bail!(
            "stack '{}' has no deployed resources (state file {}): run `webhook-deploy up --suffix {}` first",
            st.suffix,
            paths.file.display(),
            st.suffix
        );
    }
    let mut out = outputs_json(&st);
    if show_secrets {
        add_secrets(cli, &st, &paths.file, &mut out).await?;
    }
    match cli.common.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Output::Text => print_outputs_text(&out),
    }
    Ok(EXIT_OK)
}

fn lambdas(output: Output) -> Result<u8> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&crate::lambdas::lambdas_report())?
        ),
        Output::Text => {
            println!(
                "{:<20} {:>10}  {:<44}  sha256 (hex)",
                "function", "zip bytes", "CodeSha256"
            );
            for l in &crate::lambdas::ALL {
                println!(
                    "{:<20} {:>10}  {:<44}  {}",
                    l.name,
                    l.zip.len(),
                    l.sha256_b64,
                    l.sha256_hex
                );
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Entry;

    fn report(actions: &[Action]) -> Report {
        Report {
            entries: actions
                .iter()
                .enumerate()
                .map(|(i, a)| Entry::new(&format!("r{i}"), "kind", a.clone(), None))
                .collect(),
            started_at: std::time::SystemTime::now(),
            elapsed: std::time::Duration::ZERO,
            interrupted: false,
            halted: None,
        }
    }

    #[test]
    fn the_plan_line_counts_every_row() {
        use Action::*;
        let r = report(&[Create, Update, Delete, Delete, NoChange, AfterDependencies]);
        assert_eq!(
            plan_summary(&r.entries),
            "Plan: 1 to create, 1 to update, 0 to adopt, 2 to delete, 1 unchanged, \
             1 decided after dependencies."
        );
        assert_eq!(
            plan_summary(&report(&[NoChange]).entries),
            "Plan: 0 to create, 0 to update, 0 to adopt, 0 to delete, 1 unchanged."
        );
    }

    #[test]
    fn status_counts_what_it_could_not_look_for_apart_from_missing() {
        use Action::*;
        let r = report(&[
            Create,
            AfterDependencies,
            AfterDependencies,
            Update,
            NoChange,
        ]);
        assert_eq!(
            status_summary(&r),
            "1 drifted, 1 missing, 2 unknown until what they depend on exists."
        );
        assert_eq!(status_summary(&report(&[NoChange, Adopt])), "In sync.");
    }
}
