//! The API's deployment (a snapshot of its definition) and the `prod`
//! stage serving it. A deployment is created only when the definition
//! changed: its description carries the definition's fingerprint, so an
//! unchanged API finds the deployment it already has. Never created with
//! `stageName` (that would create or overwrite a stage beside the managed one).

use crate::engine::context::Cx;
use crate::engine::resource::{check, Drift, Live, Record, Resource};
use crate::resources::rest_api::{
    api_id, api_id_for_delete, patch, tag_map, Definition, NOT_FOUND, THROTTLED, THROTTLE_WAIT,
};
use crate::resources::{is_code, retry_while, tags_drift};
use crate::stack::{ids, STAGE};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_apigateway::types::Op;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// Deployments made by webhook-deploy: `webhook-deploy definition <fingerprint>`.
pub const DESCRIPTION_PREFIX: &str = "webhook-deploy definition ";

/// Method settings for every resource and method of the stage.
const ALL_METHODS: &str = "*/*";
/// Drift: methods whose own settings log full requests and responses.
const METHOD_DATA_TRACE: &str = "method_data_trace";

/// (id, description) of every deployment of the API (none when the API is gone).
async fn deployments(cx: &Cx, api: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut position = None;
    loop {
        let page = match cx
            .aws
            .apigateway
            .get_deployments()
            .rest_api_id(api)
            .limit(500)
            .set_position(position)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) if is_code(&e, NOT_FOUND) => return Ok(out),
            Err(e) => return Err(e).context("apigateway:GetDeployments failed"),
        };
        for d in page.items() {
            out.push((
                d.id().unwrap_or_default().to_string(),
                d.description().unwrap_or_default().to_string(),
            ));
        }
        position = page.position().map(str::to_string);
        if position.is_none() {
            return Ok(out);
        }
    }
}

async fn delete_deployment(cx: &Cx, api: &str, id: &str) -> Result<()> {
    let res = retry_while(
        cx,
        THROTTLED,
        THROTTLE_WAIT,
        "API Gateway's DeleteDeployment quota",
        || {
            cx.aws
                .apigateway
                .delete_deployment()
                .rest_api_id(api)
                .deployment_id(id)
                .send()
        },
    )
    .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, NOT_FOUND) => Ok(()),
        Err(e) => Err(e).context(format!("apigateway:DeleteDeployment {id} failed")),
    }
}

/// Deletes our deployments that no stage serves (after the stage moved).
async fn clean_up_deployments(cx: &Cx, api: &str) -> Result<()> {
    let (stages, deployments) = tokio::join!(
        cx.aws.apigateway.get_stages().rest_api_id(api).send(),
        deployments(cx, api)
    );
    let stages = stages.context("apigateway:GetStages failed")?;
    let in_use: BTreeSet<&str> = stages
        .item()
        .iter()
        .filter_map(|s| s.deployment_id())
        .collect();
    for (id, description) in deployments? {
        if description.starts_with(DESCRIPTION_PREFIX) && !in_use.contains(id.as_str()) {
            cx.say(format!("deleting old deployment {id}"));
            delete_deployment(cx, api, &id).await?;
        }
    }
    Ok(())
}

pub struct ApiDeployment {
    id: String,
}

impl ApiDeployment {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn description(cx: &Cx) -> Result<String> {
        Ok(format!(
            "{DESCRIPTION_PREFIX}{}",
            Definition::desired(cx)?.fingerprint()
        ))
    }

    fn live(api: &str, id: &str, description: &str) -> Live {
        Live::new(id).attr("id", id).attr("api_id", api).attr(
            "fingerprint",
            description.trim_start_matches(DESCRIPTION_PREFIX),
        )
    }
}

#[async_trait]
impl Resource for ApiDeployment {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-deployment"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::API)
    }
    fn depends_on(&self) -> Vec<String> {
        // Deploy after the definition is in place.
        vec![ids::API_METHOD.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({ "api_id": api_id(cx)?, "description": Self::description(cx)? }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let api = api_id(cx)?;
        let want = Self::description(cx)?;
        // The newest deployment of this exact definition, if any.
        let found = deployments(cx, &api)
            .await?
            .into_iter()
            .rev()
            .find(|(_, d)| *d == want);
        Ok(found.map(|(id, d)| Self::live(&api, &id, &d)))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let api = api_id(cx)?;
        let description = Self::description(cx)?;
        let out = retry_while(
            cx,
            THROTTLED,
            THROTTLE_WAIT,
            "API Gateway's CreateDeployment quota (1 per 5 s)",
            || {
                cx.aws
                    .apigateway
                    .create_deployment()
                    .rest_api_id(&api)
                    .description(&description)
                    .send()
            },
        )
        .await
        .context("apigateway:CreateDeployment failed")?;
        let id = out
            .id()
            .context("apigateway:CreateDeployment returned no id")?;
        Ok(Self::live(&api, id, &description))
    }

    async fn update(&self, _cx: &Cx, live: &Live) -> Result<Live> {
        // A deployment is immutable; a new definition is a new deployment.
        Ok(live.clone())
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(api) = api_id_for_delete(cx, rec).await? else {
            return Ok(false);
        };
        let ours: Vec<String> = deployments(cx, &api)
            .await?
            .into_iter()
            .filter(|(_, d)| d.starts_with(DESCRIPTION_PREFIX))
            .map(|(id, _)| id)
            .collect();
        for id in &ours {
            delete_deployment(cx, &api, id).await?;
        }
        Ok(!ours.is_empty())
    }
}

pub struct ApiStage {
    id: String,
}

impl ApiStage {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack
            .tags(&self.id, &format!("{}/{STAGE}", cx.stack.api_name()))
    }

    fn arn(cx: &Cx, api: &str) -> String {
        cx.stack
            .apigateway_arn(&format!("/restapis/{api}/stages/{STAGE}"))
    }

    fn live(api: &str) -> Live {
        Live::new(format!("{api}/{STAGE}"))
            .attr("api_id", api)
            .attr("name", STAGE)
    }

    /// Patch operations for the `*/*` method settings.
    fn method_setting_ops(cx: &Cx) -> Vec<aws_sdk_apigateway::types::PatchOperation> {
        let o = &cx.stack.opts;
        vec![
            patch(
                Op::Replace,
                &format!("/{ALL_METHODS}/throttling/rateLimit"),
                o.throttle_rate.to_string(),
            ),
            patch(
                Op::Replace,
                &format!("/{ALL_METHODS}/throttling/burstLimit"),
                o.throttle_burst.to_string(),
            ),
            patch(
                Op::Replace,
                &format!("/{ALL_METHODS}/metrics/enabled"),
                "true",
            ),
            patch(
                Op::Replace,
                &format!("/{ALL_METHODS}/logging/dataTrace"),
                "false",
            ),
        ]
    }

    async fn patch_stage(
        cx: &Cx,
        api: &str,
        ops: Vec<aws_sdk_apigateway::types::PatchOperation>,
    ) -> Result<()> {
        cx.aws
            .apigateway
            .update_stage()
            .rest_api_id(api)
            .stage_name(STAGE)
            .set_patch_operations(Some(ops))
            .send()
            .await
            .context("apigateway:UpdateStage failed")?;
        Ok(())
    }
}

#[async_trait]
impl Resource for ApiStage {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-stage"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::API)
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::API_DEPLOYMENT.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let o = &cx.stack.opts;
        Ok(json!({
            "api_id": api_id(cx)?,
            "name": STAGE,
            "deployment_id": cx.attr(ids::API_DEPLOYMENT, "id")?,
            "tracing_enabled": true,
            "method_settings": { ALL_METHODS: {
                "throttling_rate_limit": o.throttle_rate,
                "throttling_burst_limit": o.throttle_burst,
                "metrics_enabled": true,
                "data_trace_enabled": false,
            }},
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let api = api_id(cx)?;
        let s = match cx
            .aws
            .apigateway
            .get_stage()
            .rest_api_id(&api)
            .stage_name(STAGE)
            .send()
            .await
        {
            Ok(s) => s,
            Err(e) if is_code(&e, NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e).context("apigateway:GetStage failed"),
        };
        let o = &cx.stack.opts;
        let mut live = Self::live(&api);
        let d = &mut live.drift;
        check(
            d,
            "deployment_id",
            &Some(cx.attr(ids::API_DEPLOYMENT, "id")?),
            &s.deployment_id().map(str::to_string),
        );
        check(d, "tracing_enabled", &true, &s.tracing_enabled());
        let all = s.method_settings().and_then(|m| m.get(ALL_METHODS));
        check(
            d,
            "throttling_rate_limit",
            &Some(o.throttle_rate),
            &all.map(|m| m.throttling_rate_limit()),
        );
        check(
            d,
            "throttling_burst_limit",
            &Some(o.throttle_burst),
            &all.map(|m| m.throttling_burst_limit()),
        );
        check(
            d,
            "metrics_enabled",
            &Some(true),
            &all.map(|m| m.metrics_enabled()),
        );
        // Full request and response logging would put payloads in CloudWatch.
        check(
            d,
            "data_trace_enabled",
            &Some(false),
            &all.map(|m| m.data_trace_enabled()),
        );
        // A method's own settings (`webhook/POST`) can turn it back on for
        // that method alone.
        let mut traced: Vec<&str> = s
            .method_settings()
            .into_iter()
            .flatten()
            .filter(|(k, m)| k.as_str() != ALL_METHODS && m.data_trace_enabled())
            .map(|(k, _)| k.as_str())
            .collect();
        traced.sort_unstable();
        if !traced.is_empty() {
            d.push(Drift::new(
                METHOD_DATA_TRACE,
                "off for every method",
                traced.join(" "),
            ));
        }
        d.extend(tags_drift(&self.tags(cx), &tag_map(s.tags())));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let api = api_id(cx)?;
        cx.aws
            .apigateway
            .create_stage()
            .rest_api_id(&api)
            .stage_name(STAGE)
            .deployment_id(cx.attr(ids::API_DEPLOYMENT, "id")?)
            .tracing_enabled(true)
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
            .context("apigateway:CreateStage failed")?;
        // Throttling on the stage itself is not applied by AWS (a seed
        // defect): it belongs in the `*/*` method settings.
        // Independent of each other: both at once.
        tokio::try_join!(
            Self::patch_stage(cx, &api, Self::method_setting_ops(cx)),
            clean_up_deployments(cx, &api)
        )?;
        Ok(Self::live(&api))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let api = api_id(cx)?;
        let mut ops = Vec::new();
        let mut moved = false;
        let mut settings = false;
        for d in &live.drift {
            match d.field.as_str() {
                "deployment_id" => {
                    ops.push(patch(
                        Op::Replace,
                        "/deploymentId",
                        cx.attr(ids::API_DEPLOYMENT, "id")?,
                    ));
                    moved = true;
                }
                "tracing_enabled" => ops.push(patch(Op::Replace, "/tracingEnabled", "true")),
                "throttling_rate_limit"
                | "throttling_burst_limit"
                | "metrics_enabled"
                | "data_trace_enabled" => settings = true,
                METHOD_DATA_TRACE => {
                    ops.extend(d.have.split_whitespace().map(|key| {
                        patch(Op::Replace, &format!("/{key}/logging/dataTrace"), "false")
                    }))
                }
                "tags" => {
                    cx.aws
                        .apigateway
                        .tag_resource()
                        .resource_arn(Self::arn(cx, &api))
                        .set_tags(Some(self.tags(cx).into_iter().collect()))
                        .send()
                        .await
                        .context("apigateway:TagResource failed")?;
                }
                _ => {}
            }
        }
        if settings {
            ops.extend(Self::method_setting_ops(cx));
        }
        if !ops.is_empty() {
            Self::patch_stage(cx, &api, ops).await?;
        }
        if moved {
            clean_up_deployments(cx, &api).await?;
        }
        Ok(Self::live(&api))
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(api) = api_id_for_delete(cx, rec).await? else {
            return Ok(false);
        };
        match cx
            .aws
            .apigateway
            .delete_stage()
            .rest_api_id(&api)
            .stage_name(STAGE)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteStage failed"),
        }
    }
}
