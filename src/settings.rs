//! Stack settings that stay.
//!
//! Every option that shapes what `up` converges to is a setting: a key with
//! a canonical text value. `up` records the settings that differ from their
//! defaults (in the state file, and as tags on the receiver function so a
//! lost state file loses none of them); later runs start from that record,
//! and a flag changes one setting until another flag changes it back. A
//! bare `up` therefore never reverts a deliberate option. Nothing secret is
//! a setting: for the signing secret only the name of the variable that
//! holds it is recorded.

use crate::cli::{ApiArgs, ComputeArgs};
use crate::stack::{Function, Signature, StackOptions};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// The recorded settings: key → value, only those that differ from the default.
pub type Recorded = BTreeMap<String, String>;

/// Tag keys that carry the recorded settings on the receiver function.
pub const TAG_PREFIX: &str = "webhook-deploy:setting:";

const API_KEY: &str = "api-key";
const VPC: &str = "vpc";
const SIGNATURE: &str = "signature";
const SECRET_ENV: &str = "signing-secret-env";
const RATE: &str = "throttle-rate";
const BURST: &str = "throttle-burst";
const EMAIL: &str = "alarm-email";

fn memory_key(f: Function) -> String {
    format!("memory.{}", f.key())
}

fn timeout_key(f: Function) -> String {
    format!("timeout.{}", f.key())
}

/// Every setting with its default (`None`: unset), in the order shown.
fn defaults() -> Vec<(String, Option<String>)> {
    let d = StackOptions::default();
    let mut out = vec![
        (VPC.to_string(), Some(on_off(d.vpc))),
        (API_KEY.to_string(), Some(on_off(d.api_key_required))),
        (
            SIGNATURE.to_string(),
            Some(d.signature.as_str().to_string()),
        ),
        (SECRET_ENV.to_string(), None),
    ];
    for f in Function::ALL {
        out.push((memory_key(f), Some(d.memory_mb[f.index()].to_string())));
    }
    for f in Function::ALL {
        out.push((timeout_key(f), Some(d.timeout_s[f.index()].to_string())));
    }
    out.push((RATE.to_string(), Some(d.throttle_rate.to_string())));
    out.push((BURST.to_string(), Some(d.throttle_burst.to_string())));
    out.push((EMAIL.to_string(), None));
    out
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

/// Where a setting's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A flag of this run.
    Flag,
    /// Recorded by an earlier `up`.
    Recorded,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Recorded => "recorded",
            Source::Default => "default",
        }
    }
}

/// One setting as this run sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
    pub default: Option<String>,
    pub source: Source,
    /// The value the record held (or the default) before this run.
    pub before: Option<String>,
}

/// The settings of one run: the record, with this run's flags over it.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub settings: Vec<Setting>,
}

/// The settings this run's flags give: key → value (`None`: back to unset).
/// Opposite flags are refused (clap checks them only within one side of
/// the subcommand's name, and these flags go on either side).
pub fn flags(api: &ApiArgs, compute: &ComputeArgs) -> Result<Vec<(String, Option<String>)>> {
    for (both, a, b) in [
        (api.api_key && api.no_api_key, "--api-key", "--no-api-key"),
        (compute.vpc && compute.no_vpc, "--vpc", "--no-vpc"),
        (
            api.alarm_email.is_some() && api.no_alarm_email,
            "--alarm-email",
            "--no-alarm-email",
        ),
        (
            compute.signing_secret_env.is_some() && compute.no_signing_secret_env,
            "--signing-secret-env",
            "--no-signing-secret-env",
        ),
    ] {
        if both {
            bail!("{a} and {b} contradict each other: give one of them");
        }
    }
    let mut out = Vec::new();
    let mut flag = |k: &str, v: Option<String>| out.push((k.to_string(), v));
    if api.no_api_key || api.api_key {
        flag(API_KEY, Some(on_off(api.api_key)));
    }
    if compute.no_vpc || compute.vpc {
        flag(VPC, Some(on_off(compute.vpc)));
    }
    if let Some(s) = compute.signature {
        flag(SIGNATURE, Some(s.as_str().to_string()));
    }
    if let Some(v) = &compute.signing_secret_env {
        flag(SECRET_ENV, Some(v.clone()));
    }
    if compute.no_signing_secret_env {
        flag(SECRET_ENV, None);
    }
    for (key, values) in [
        (memory_key as fn(Function) -> String, &compute.memory),
        (timeout_key, &compute.timeout),
    ] {
        for (f, v) in values {
            match f {
                Some(f) => flag(&key(*f), Some(v.to_string())),
                None => Function::ALL
                    .iter()
                    .for_each(|f| flag(&key(*f), Some(v.to_string()))),
            }
        }
    }
    if let Some(r) = api.throttle_rate {
        flag(RATE, Some(r.to_string()));
    }
    if let Some(b) = api.throttle_burst {
        flag(BURST, Some(b.to_string()));
    }
    if let Some(e) = &api.alarm_email {
        flag(EMAIL, Some(e.clone()));
    }
    if api.no_alarm_email {
        flag(EMAIL, None);
    }
    Ok(out)
}

/// `recorded` with `flags` over it. A recorded value that this version
/// cannot read (an edited state file or tag) is refused, naming the flag
/// that replaces it.
pub fn resolve(recorded: &Recorded, flags: &[(String, Option<String>)]) -> Result<Resolved> {
    let known: Vec<(String, Option<String>)> = defaults();
    for (k, v) in recorded {
        if !known.iter().any(|(key, _)| key == k) {
            bail!("the recorded setting {k:?} is not one this webhook-deploy knows; upgrade webhook-deploy, or remove it from the state file and the receiver function's tag {TAG_PREFIX}{k}");
        }
        check_value(k, v).map_err(|e| {
            anyhow::anyhow!("the recorded setting {k}={v:?} is invalid ({e}); give the setting on the command line to replace it")
        })?;
    }
    let settings = known
        .into_iter()
        .map(|(key, default)| {
            let before = recorded.get(&key).cloned().or_else(|| default.clone());
            let from_flag = flags.iter().rev().find(|(k, _)| *k == key);
            let (value, source) = match (from_flag, recorded.get(&key)) {
                (Some((_, v)), _) => (v.clone(), Source::Flag),
                (None, Some(v)) => (Some(v.clone()), Source::Recorded),
                (None, None) => (default.clone(), Source::Default),
            };
            Setting {
                key,
                value,
                default,
                source,
                before,
            }
        })
        .collect();
    Ok(Resolved { settings })
}

/// Checks one recorded value with the same rules as its flag.
fn check_value(key: &str, v: &str) -> Result<(), String> {
    let per_function = |min, max| crate::cli::per_function(min, max)(v).map(|_| ());
    match key {
        API_KEY | VPC if v == "on" || v == "off" => Ok(()),
        API_KEY | VPC => Err("expected on or off".into()),
        SIGNATURE => Signature::parse(v)
            .map(|_| ())
            .ok_or_else(|| "not a signature scheme".to_string()),
        SECRET_ENV if !v.is_empty() => Ok(()),
        SECRET_ENV => Err("empty variable name".into()),
        RATE => crate::cli::positive_rate(v).map(|_| ()),
        BURST => match v.parse::<i32>() {
            Ok(b) if (1..=1_000_000).contains(&b) => Ok(()),
            _ => Err("not a whole number from 1 to 1000000".into()),
        },
        EMAIL => crate::cli::email(v).map(|_| ()),
        k if k.starts_with("memory.") => per_function(128, 10240),
        k if k.starts_with("timeout.") => per_function(1, 900),
        _ => Err("unknown setting".into()),
    }
}

impl Resolved {
    fn value(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.value.as_deref())
    }

    /// What `up` records: every setting whose value is not the default.
    pub fn recorded(&self) -> Recorded {
        self.settings
            .iter()
            .filter(|s| s.value != s.default)
            .filter_map(|s| Some((s.key.clone(), s.value.clone()?)))
            .collect()
    }

    /// The settings whose value this run changes from what was recorded.
    pub fn changes(&self) -> Vec<&Setting> {
        self.settings
            .iter()
            .filter(|s| s.value != s.before)
            .collect()
    }

    /// The signing secret's variable and whether this run's flag named it.
    pub fn signing_secret_env(&self) -> Option<(&str, Source)> {
        let s = self.settings.iter().find(|s| s.key == SECRET_ENV)?;
        Some((s.value.as_deref()?, s.source))
    }

    /// The stack options these settings give (no secret: the caller reads
    /// it from the variable, which only it may do).
    pub fn options(&self) -> StackOptions {
        let d = StackOptions::default();
        let num = |k: &str, default: i32| {
            self.value(k)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let per = |key: fn(Function) -> String, defaults: [i32; 3]| {
            Function::ALL.map(|f| num(&key(f), defaults[f.index()]))
        };
        StackOptions {
            api_key_required: self.value(API_KEY) != Some("off"),
            vpc: self.value(VPC) != Some("off"),
            signature: self
                .value(SIGNATURE)
                .and_then(Signature::parse)
                .unwrap_or(d.signature),
            memory_mb: per(memory_key, d.memory_mb),
            timeout_s: per(timeout_key, d.timeout_s),
            throttle_rate: self
                .value(RATE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.throttle_rate),
            throttle_burst: num(BURST, d.throttle_burst),
            alarm_email: self.value(EMAIL).map(str::to_string),
            recorded: self.recorded(),
            ..d
        }
    }

    /// The settings as a JSON document's part: one {key, value, default,
    /// source, before} object per setting, in display order.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.settings).unwrap_or_default()
    }
}

/// The settings as the receiver function's tags.
pub fn to_tags(recorded: &Recorded) -> BTreeMap<String, String> {
    recorded
        .iter()
        .map(|(k, v)| (format!("{TAG_PREFIX}{k}"), v.clone()))
        .collect()
}

/// The settings recorded in a function's tags.
pub fn from_tags<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> Recorded {
    tags.into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TAG_PREFIX)?.to_string(), v.clone())))
        .collect()
}

/// A setting's value as `settings` and `plan` show it (`(none)` when unset).
pub fn describe(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "(none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn run_flags(args: &[&str]) -> Vec<(String, Option<String>)> {
        let mut argv = vec!["webhook-deploy", "up"];
        argv.extend_from_slice(args);
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        flags(&cli.api, &cli.compute).unwrap()
    }

    #[test]
    fn a_flag_stays_until_changed_and_defaults_are_not_recorded() {
        let first = resolve(
            &Recorded::new(),
            &run_flags(&[
                "--no-api-key",
                "--signature",
                "stripe",
                "--memory",
                "processor=1024",
                "--alarm-email",
                "oncall@example.com",
            ]),
        )
        .unwrap();
        let rec = first.recorded();
        assert_eq!(
            rec,
            Recorded::from([
                ("alarm-email".into(), "oncall@example.com".into()),
                ("api-key".into(), "off".into()),
                ("memory.processor".into(), "1024".into()),
                ("signature".into(), "stripe".into()),
            ])
        );
        // A bare run: everything as recorded, nothing changes.
        let bare = resolve(&rec, &[]).unwrap();
        assert!(bare.changes().is_empty());
        let o = bare.options();
        assert!(!o.api_key_required);
        assert_eq!(o.signature, Signature::Stripe);
        assert_eq!(o.memory_mb, [512, 1024, 512]);
        assert_eq!(o.alarm_email.as_deref(), Some("oncall@example.com"));
        // Back to the defaults, one flag each.
        let back = resolve(
            &rec,
            &run_flags(&[
                "--api-key",
                "--signature",
                "standard-webhooks",
                "--memory",
                "512",
                "--no-alarm-email",
            ]),
        )
        .unwrap();
        assert!(back.recorded().is_empty(), "{:?}", back.recorded());
        assert_eq!(back.changes().len(), 4);
        assert!(back
            .settings
            .iter()
            .filter(|s| s.key == "api-key")
            .all(|s| s.source == Source::Flag));
    }

    #[test]
    fn tags_carry_the_record_and_a_bad_record_is_refused() {
        let rec = Recorded::from([("vpc".into(), "off".into())]);
        let tags = to_tags(&rec);
        assert_eq!(tags["webhook-deploy:setting:vpc"], "off");
        let mut all = tags.clone();
        all.insert("Name".into(), "x".into());
        assert_eq!(from_tags(&all), rec);
        let e = resolve(&Recorded::from([("vpc".into(), "maybe".into())]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("vpc=\"maybe\" is invalid"), "{e}");
        let e = resolve(&Recorded::from([("colour".into(), "red".into())]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one this webhook-deploy knows"), "{e}");
    }

    #[test]
    fn opposite_flags_are_refused() {
        for pair in [
            ["--api-key", "--no-api-key"],
            ["--vpc", "--no-vpc"],
            ["--alarm-email=a@b.co", "--no-alarm-email"],
        ] {
            let mut argv = vec!["webhook-deploy", "up"];
            argv.extend_from_slice(&pair);
            let e = crate::cli::Cli::try_parse_from(argv).unwrap_err();
            assert!(e.to_string().contains("cannot be used with"), "{e}");
        }
        // One on each side of the subcommand: clap lets it through.
        let cli =
            crate::cli::Cli::try_parse_from(["webhook-deploy", "--no-api-key", "up", "--api-key"])
                .unwrap();
        let e = flags(&cli.api, &cli.compute).unwrap_err().to_string();
        assert_eq!(
            e,
            "--api-key and --no-api-key contradict each other: give one of them"
        );
    }
}
