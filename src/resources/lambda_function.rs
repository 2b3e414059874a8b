//! One Lambda function of the pipeline: the embedded zip, `provided.al2023`,
//! X-Ray Active, JSON logs, its environment, and (unless `--no-vpc`) the
//! stack's private subnets and security group.
//!
//! Code is uploaded only when the embedded zip's SHA-256 differs from the
//! live `CodeSha256`; configuration only when one of its fields differs.
//! The receiver's signing secret is never recorded in state or shown: it
//! comes from the operator's environment variable, or is generated once and
//! then read back from the function's configuration on later runs.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Drift, Live, Record, Resource};
use crate::lambdas;
use crate::resources::{found, is_code, owner_of, retry_iam_propagation, tags_drift};
use crate::settings;
use crate::stack::{ids, Function, Signature};
use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture, Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus, LogFormat,
    LoggingConfig, Runtime, State, TracingConfig, TracingMode, VpcConfig, VpcConfigResponse,
};
use base64::Engine as _;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const RUNTIME: &str = "provided.al2023";
pub const HANDLER: &str = "bootstrap";
pub const SECRET_VAR: &str = "SIGNING_SECRET";
/// Kept as found: the operator's rotation (the receiver accepts both).
pub const PREVIOUS_SECRET_VAR: &str = "SIGNING_SECRET_PREVIOUS";
/// A VPC function takes about a minute to become Active.
const READY_LIMIT: Duration = Duration::from_secs(900);

pub struct LambdaFunction {
    id: String,
    function: Function,
    /// The network resources it runs in (none with `--no-vpc`).
    network_deps: Vec<String>,
    /// The live signing secrets found by `read` (current, previous); kept
    /// in memory for this run only.
    secrets: Mutex<(Option<String>, Option<String>)>,
    /// Whether `read` found it Active with no update in progress (then an
    /// update need not wait before its first change).
    ready_when_read: Mutex<bool>,
}

/// A new Standard Webhooks secret (`whsec_` + base64 of 32 random bytes; the
/// same string works as a Stripe or GitHub secret). The bytes come from two
/// v4 UUIDs (the OS random source; 244 random bits).
pub fn generate_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Whether `secret` can key the scheme (Standard Webhooks needs base64
/// after `whsec_`). Says nothing about the value itself.
pub fn secret_fits(scheme: Signature, secret: &str) -> bool {
    match scheme {
        Signature::None => true,
        Signature::StandardWebhooks => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .is_ok_and(|k| !k.is_empty())
        }
        Signature::Stripe | Signature::Github => !secret.is_empty(),
    }
}

/// The comparable VPC placement: sorted subnet ids and security group ids,
/// `None` outside a VPC (AWS reports that as absent or as empty lists).
type Placement = Option<(Vec<String>, Vec<String>)>;

fn placement(v: Option<&VpcConfigResponse>) -> Placement {
    let v = v?;
    let mut subnets = v.subnet_ids().to_vec();
    let mut groups = v.security_group_ids().to_vec();
    if subnets.is_empty() && groups.is_empty() {
        return None;
    }
    subnets.sort();
    groups.sort();
    Some((subnets, groups))
}

impl LambdaFunction {
    pub fn new(id: &str, function: Function, network_deps: Vec<String>) -> Self {
        Self {
            id: id.into(),
            function,
            network_deps,
            secrets: Mutex::new((None, None)),
            ready_when_read: Mutex::new(false),
        }
    }

    fn name(&self, cx: &Cx) -> String {
        cx.stack.function_name(self.function)
    }

    fn package(&self) -> Result<&'static lambdas::EmbeddedLambda> {
        lambdas::get(self.function.package())
            .ok_or_else(|| anyhow!("no embedded package {}", self.function.package()))
    }

    fn memory(&self, cx: &Cx) -> i32 {
        cx.stack.opts.memory_mb[self.function.index()]
    }

    fn timeout(&self, cx: &Cx) -> i32 {
        cx.stack.opts.timeout_s[self.function.index()]
    }

    /// The stack's tags; on the receiver also the recorded settings.
    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        let mut tags = cx.stack.tags(&self.id, &self.name(cx));
        if self.function == Function::Receiver {
            tags.extend(settings::to_tags(&cx.stack.opts.recorded));
        }
        tags
    }

    fn role_arn(&self, cx: &Cx) -> Result<String> {
        Ok(cx.attr(&ids::role(self.function), "arn")?)
    }

    /// The environment without secrets (those are compared separately).
    fn plain_env(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.function_env(self.function)
    }

    fn wants_secret(&self, cx: &Cx) -> bool {
        self.function == Function::Receiver && cx.stack.opts.signature != Signature::None
    }

    /// The secret the function should have: the operator's, else the one it
    /// already has (when it fits the scheme), else a new one.
    fn secret(&self, cx: &Cx) -> Option<String> {
        if !self.wants_secret(cx) {
            return None;
        }
        if let Some(s) = &cx.stack.opts.signing_secret {
            return Some(s.value.clone());
        }
        let mut cache = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        match &cache.0 {
            Some(live) if secret_fits(cx.stack.opts.signature, live) => Some(live.clone()),
            _ => {
                let new = generate_secret();
                cache.0 = Some(new.clone());
                Some(new)
            }
        }
    }

    fn full_env(&self, cx: &Cx) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = self.plain_env(cx).into_iter().collect();
        if let Some(s) = self.secret(cx) {
            env.insert(SECRET_VAR.into(), s);
        }
        let cache = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(prev), true) = (&cache.1, self.wants_secret(cx)) {
            env.insert(PREVIOUS_SECRET_VAR.into(), prev.clone());
        }
        env
    }

    fn want_placement(&self, cx: &Cx) -> Result<Placement> {
        if !cx.stack.opts.vpc {
            return Ok(None);
        }
        let mut subnets = ids::SUBNETS
            .iter()
            .map(|s| Ok(cx.attr(s, "id")?))
            .collect::<Result<Vec<String>>>()?;
        subnets.sort();
        Ok(Some((subnets, vec![cx.attr(ids::SECURITY_GROUP, "id")?])))
    }

    fn vpc_config(&self, cx: &Cx) -> Result<VpcConfig> {
        let (subnets, groups) = self.want_placement(cx)?.unwrap_or_default();
        // Empty lists take a function out of its VPC.
        Ok(VpcConfig::builder()
            .set_subnet_ids(Some(subnets))
            .set_security_group_ids(Some(groups))
            .build())
    }

    fn logging(&self, cx: &Cx) -> LoggingConfig {
        LoggingConfig::builder()
            .log_format(LogFormat::Json)
            .log_group(cx.stack.log_group_name(self.function))
            .build()
    }

    fn live(&self, cx: &Cx, arn: &str) -> Live {
        let name = self.name(cx);
        Live::new(&name).attr("name", &name).attr("arn", arn)
    }

    fn remember_secrets(&self, env: Option<&HashMap<String, String>>) {
        let get = |k: &str| {
            env.and_then(|e| e.get(k))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        *self.secrets.lock().unwrap_or_else(|p| p.into_inner()) =
            (get(SECRET_VAR), get(PREVIOUS_SECRET_VAR));
    }

    fn drift(
        &self,
        cx: &Cx,
        c: &FunctionConfiguration,
        tags: Option<&HashMap<String, String>>,
    ) -> Result<Vec<Drift>> {
        let mut d = Vec::new();
        let pkg = self.package()?;
        check(
            &mut d,
            "code",
            &Some(pkg.sha256_b64.trim()),
            &c.code_sha256(),
        );
        check(
            &mut d,
            "runtime",
            &Some(RUNTIME),
            &c.runtime().map(|r| r.as_str()),
        );
        check(&mut d, "handler", &Some(HANDLER), &c.handler());
        check(
            &mut d,
            "role",
            &Some(self.role_arn(cx)?),
            &c.role().map(str::to_string),
        );
        check(
            &mut d,
            "memory_mb",
            &Some(self.memory(cx)),
            &c.memory_size(),
        );
        check(&mut d, "timeout_s", &Some(self.timeout(cx)), &c.timeout());
        if !c.architectures().is_empty() {
            check(
                &mut d,
                "architectures",
                &vec!["x86_64"],
                &c.architectures().iter().map(|a| a.as_str()).collect(),
            );
        }
        let live_env = c.environment().and_then(|e| e.variables());
        let have_env: BTreeMap<String, String> = live_env
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != SECRET_VAR && *k != PREVIOUS_SECRET_VAR)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        check(&mut d, "environment", &self.plain_env(cx), &have_env);
        if self.wants_secret(cx) {
            // Values are never shown, only how they differ.
            let have = live_env
                .and_then(|m| m.get(SECRET_VAR))
                .filter(|v| !v.is_empty());
            match (&cx.stack.opts.signing_secret, have) {
                (_, None) => d.push(Drift::new("signing_secret", "(set)", "(missing)")),
                (Some(want), Some(have)) if &want.value != have => d.push(Drift::new(
                    "signing_secret",
                    format!("(from {})", want.source),
                    "(a different value)",
                )),
                (None, Some(have)) if !secret_fits(cx.stack.opts.signature, have) => {
                    d.push(Drift::new(
                        "signing_secret",
                        format!("(a {} secret)", cx.stack.opts.signature.as_str()),
                        "(a secret of another format)",
                    ))
                }
                _ => {}
            }
        } else if live_env.is_some_and(|m| m.contains_key(SECRET_VAR)) {
            d.push(Drift::new("signing_secret", "(none)", "(set)"));
        }
        check(
            &mut d,
            "vpc_config",
            &self.want_placement(cx)?,
            &placement(c.vpc_config()),
        );
        // Compared only when the service returns them: moto returns no
        // LoggingConfig at all, and would otherwise show endless drift.
        if let Some(t) = c.tracing_config() {
            check(
                &mut d,
                "tracing",
                &Some("Active"),
                &t.mode().map(|m| m.as_str()),
            );
        }
        if let Some(l) = c.logging_config() {
            let want_group = cx.stack.log_group_name(self.function);
            check(
                &mut d,
                "logging",
                &(Some("JSON"), Some(want_group.as_str())),
                &(l.log_format().map(|f| f.as_str()), l.log_group()),
            );
        }
        let have_tags: BTreeMap<String, String> = tags
            .map(|t| t.clone().into_iter().collect())
            .unwrap_or_default();
        let want_tags = self.tags(cx);
        d.extend(tags_drift(&want_tags, &have_tags));
        // A setting back at its default leaves its tag behind otherwise.
        let stale = stale_setting_tags(&want_tags, &have_tags);
        if !stale.is_empty() {
            d.push(Drift::new("setting_tags", "(none)", stale.join(",")));
        }
        Ok(d)
    }

    /// Waits until the function is Active with no update in progress: one
    /// GetFunctionConfiguration per poll (the SDK's two waiters took two,
    /// and wait at least a second between polls), first poll at once.
    async fn wait_ready(&self, cx: &Cx, after: &str) -> Result<()> {
        let lambda = &cx.aws.lambda;
        let name = self.name(cx);
        cx.say(format!(
            "waiting for the function to be ready after {after}"
        ));
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        loop {
            let c = lambda
                .get_function_configuration()
                .function_name(&name)
                .send()
                .await
                .with_context(|| format!("lambda:GetFunctionConfiguration failed after {after}"))?;
            if ready(&name, after, c.state(), c.last_update_status(), || {
                c.state_reason()
                    .or(c.last_update_status_reason())
                    .unwrap_or_default()
                    .to_string()
            })? {
                return Ok(());
            }
            if start.elapsed() + delay > READY_LIMIT {
                bail!(
                    "{name} was not ready {}s after {after}",
                    READY_LIMIT.as_secs()
                );
            }
            cx.pause(delay, "waiting for the function to be ready")
                .await?;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn put_config(&self, cx: &Cx) -> Result<()> {
        let lambda = &cx.aws.lambda;
        let name = self.name(cx);
        let role = self.role_arn(cx)?;
        let env = self.full_env(cx);
        let vpc = self.vpc_config(cx)?;
        let out = retry_iam_propagation(cx, || {
            lambda
                .update_function_configuration()
                .function_name(&name)
                .runtime(Runtime::from(RUNTIME))
                .handler(HANDLER)
                .role(&role)
                .memory_size(self.memory(cx))
                .timeout(self.timeout(cx))
                .environment(
                    Environment::builder()
                        .set_variables(Some(env.clone()))
                        .build(),
                )
                .vpc_config(vpc.clone())
                .tracing_config(TracingConfig::builder().mode(TracingMode::Active).build())
                .logging_config(self.logging(cx))
                .send()
        })
        .await
        .context("lambda:UpdateFunctionConfiguration failed")?;
        let after = "the configuration update";
        if !ready(&name, after, out.state(), out.last_update_status(), || {
            out.last_update_status_reason()
                .unwrap_or_default()
                .to_string()
        })? {
            self.wait_ready(cx, after).await?;
        }
        Ok(())
    }

    async fn put_code(&self, cx: &Cx) -> Result<()> {
        cx.say("uploading code");
        let name = self.name(cx);
        let out = cx
            .aws
            .lambda
            .update_function_code()
            .function_name(&name)
            .zip_file(Blob::new(self.package()?.zip))
            .architectures(Architecture::X8664)
            .send()
            .await
            .context("lambda:UpdateFunctionCode failed")?;
        let after = "the code update";
        if !ready(&name, after, out.state(), out.last_update_status(), || {
            out.last_update_status_reason()
                .unwrap_or_default()
                .to_string()
        })? {
            self.wait_ready(cx, after).await?;
        }
        Ok(())
    }
}

/// Whether a function in `state` with `update` can take the next change;
/// an error when it failed.
fn ready(
    name: &str,
    after: &str,
    state: Option<&State>,
    update: Option<&LastUpdateStatus>,
    reason: impl Fn() -> String,
) -> Result<bool> {
    if state == Some(&State::Failed) || update == Some(&LastUpdateStatus::Failed) {
        bail!("{name} failed after {after}: {}", reason());
    }
    Ok(state.is_none_or(|s| *s == State::Active)
        && update.is_none_or(|u| *u != LastUpdateStatus::InProgress))
}

#[async_trait]
impl Resource for LambdaFunction {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "lambda-function"
    }
    fn depends_on(&self) -> Vec<String> {
        // The role before the function, so `down` deletes the function first;
        // the log group before it, or Lambda makes one without retention. The
        // table and bucket are only named (the mapping and the notification
        // wait for them), so the function is created while they are.
        let mut deps = vec![ids::role(self.function), ids::log_group(self.function)];
        deps.extend(self.network_deps.iter().cloned());
        deps
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let secret = match (&cx.stack.opts.signing_secret, self.wants_secret(cx)) {
            (_, false) => json!(null),
            (Some(s), true) => json!(format!("(from {})", s.source)),
            (None, true) => json!("(generated once, kept in the function's configuration)"),
        };
        Ok(json!({
            "name": self.name(cx),
            "runtime": RUNTIME,
            "handler": HANDLER,
            "code_sha256": self.package()?.sha256_b64.trim(),
            "role": self.role_arn(cx)?,
            "memory_mb": self.memory(cx),
            "timeout_s": self.timeout(cx),
            "environment": self.plain_env(cx),
            "signing_secret": secret,
            "vpc_config": self.want_placement(cx)?,
            "tracing": "Active",
            "logging": { "format": "JSON", "group": cx.stack.log_group_name(self.function) },
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let out = match cx
            .aws
            .lambda
            .get_function()
            .function_name(self.name(cx))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(None),
            Err(e) => return Err(e).context("lambda:GetFunction failed"),
        };
        let owner = owner_of(
            &out.tags()
                .map(|t| t.clone().into_iter().collect())
                .unwrap_or_default(),
        );
        if rec.is_none() {
            crate::engine::claim_owner(cx, &format!("{} {}", self.kind(), self.name(cx)), &owner)?;
        }
        let c = out
            .configuration()
            .context("lambda:GetFunction returned no configuration")?;
        self.remember_secrets(c.environment().and_then(|e| e.variables()));
        let is_ready = ready(
            &self.name(cx),
            "an earlier change",
            c.state(),
            c.last_update_status(),
            String::new,
        )
        .unwrap_or(false);
        *self
            .ready_when_read
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = is_ready;
        let mut live = self.live(cx, c.function_arn().unwrap_or_default());
        live.drift = self.drift(cx, c, out.tags())?;
        live.owner = owner;
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let lambda = &cx.aws.lambda;
        let name = self.name(cx);
        let role = self.role_arn(cx)?;
        let env = self.full_env(cx);
        let vpc = self.vpc_config(cx)?;
        let zip = self.package()?.zip;
        let tags: HashMap<String, String> = self.tags(cx).into_iter().collect();
        let created = retry_iam_propagation(cx, || {
            lambda
                .create_function()
                .function_name(&name)
                .runtime(Runtime::from(RUNTIME))
                .handler(HANDLER)
                .role(&role)
                .code(FunctionCode::builder().zip_file(Blob::new(zip)).build())
                .architectures(Architecture::X8664)
                .memory_size(self.memory(cx))
                .timeout(self.timeout(cx))
                .environment(
                    Environment::builder()
                        .set_variables(Some(env.clone()))
                        .build(),
                )
                .vpc_config(vpc.clone())
                .tracing_config(TracingConfig::builder().mode(TracingMode::Active).build())
                .logging_config(self.logging(cx))
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await;
        let (arn, is_ready) = match created {
            Ok(out) => (
                out.function_arn().unwrap_or_default().to_string(),
                ready(
                    &name,
                    "creation",
                    out.state(),
                    out.last_update_status(),
                    || out.state_reason().unwrap_or_default().to_string(),
                )?,
            ),
            // Created by an interrupted earlier run: converge it instead.
            Err(e) if is_code(&e, &["ResourceConflictException"]) => {
                let live = self
                    .read(cx, None)
                    .await?
                    .context("the function exists but cannot be read")?;
                return Ok(self.update(cx, &live).await?.adopted());
            }
            Err(e) => return Err(e).context("lambda:CreateFunction failed"),
        };
        // Pending on AWS (a VPC function for about a minute).
        if !is_ready {
            self.wait_ready(cx, "creation").await?;
        }
        Ok(self.live(cx, &arn))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let arn = live.attrs.get("arn").cloned().unwrap_or_default();
        // A function still Pending or InProgress rejects updates.
        let was_ready = *self
            .ready_when_read
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !was_ready {
            self.wait_ready(cx, "an earlier change").await?;
        }
        let fields: Vec<&str> = live.drift.iter().map(|d| d.field.as_str()).collect();
        if fields
            .iter()
            .any(|f| !matches!(*f, "code" | "tags" | "setting_tags"))
        {
            self.put_config(cx).await?;
        }
        if fields.contains(&"code") {
            self.put_code(cx).await?;
        }
        if fields.contains(&"tags") {
            cx.aws
                .lambda
                .tag_resource()
                .resource(&arn)
                .set_tags(Some(self.tags(cx).into_iter().collect()))
                .send()
                .await
                .context("lambda:TagResource failed")?;
        }
        if let Some(stale) = live.drift.iter().find(|d| d.field == "setting_tags") {
            cx.aws
                .lambda
                .untag_resource()
                .resource(&arn)
                .set_tag_keys(Some(stale.have.split(',').map(str::to_string).collect()))
                .send()
                .await
                .context("lambda:UntagResource failed")?;
        }
        Ok(self.live(cx, &arn))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        match cx
            .aws
            .lambda
            .delete_function()
            .function_name(self.name(cx))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(false),
            Err(e) => Err(e).context("lambda:DeleteFunction failed"),
        }
    }
}

/// Setting tags on the function that the stack no longer records.
fn stale_setting_tags(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Vec<String> {
    have.keys()
        .filter(|k| k.starts_with(settings::TAG_PREFIX) && !want.contains_key(*k))
        .cloned()
        .collect()
}

/// The settings recorded on the stack's deployed receiver (a lost state
/// file's settings); `None` when there is no receiver, or it is not this
/// stack's.
pub async fn recorded_settings(
    aws: &crate::aws::Clients,
    s: &crate::stack::Settings,
) -> Result<Option<settings::Recorded>> {
    let answer = aws
        .lambda
        .get_function()
        .function_name(s.function_name(Function::Receiver))
        .send()
        .await;
    let Some(out) = found(answer, &["ResourceNotFoundException"], "lambda:GetFunction")? else {
        return Ok(None);
    };
    let Some(tags) = out.tags() else {
        return Ok(None);
    };
    if tags.get(crate::stack::TAG_STACK) != Some(&s.suffix) {
        return Ok(None);
    }
    Ok(Some(settings::from_tags(tags)))
}

/// The receiver's signing secret as deployed (for `outputs --show-secrets`);
/// `None` when the function does not exist or has none.
pub async fn deployed_signing_secret(cx: &Cx) -> Result<Option<String>> {
    let name = cx.stack.function_name(Function::Receiver);
    let answer = cx
        .aws
        .lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await;
    let config = found(
        answer,
        &["ResourceNotFoundException"],
        "lambda:GetFunctionConfiguration",
    )?;
    Ok(config.and_then(|c| {
        c.environment()
            .and_then(|e| e.variables())
            .and_then(|v| v.get(SECRET_VAR))
            .cloned()
    }))
}

impl LambdaFunction {
    /// Validates the operator's secret for the chosen scheme, naming the
    /// variable, never the value.
    pub fn check_secret(scheme: Signature, secret: &crate::stack::Secret) -> Result<()> {
        if !secret_fits(scheme, &secret.value) {
            bail!(
                "the signing secret in {} is not a valid {} secret (expected whsec_ followed by base64)",
                secret.source,
                scheme.as_str()
            );
        }
        Ok(())
    }
}
