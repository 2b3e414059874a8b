//! Usage plan on the `prod` stage (same throttle as the stage), the API
//! key, and the key's membership in the plan. The key's value is generated
//! by API Gateway and never read here: it stays out of state and output
//! (`outputs --show-secrets` reads it on demand).

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::rest_api::{api_id, patch, tag_map, NOT_FOUND};
use crate::resources::{is_code, owner_of, tags_drift};
use crate::stack::{ids, STAGE};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_apigateway::types::{ApiStage, Op, ThrottleSettings};
use serde_json::json;
use std::collections::BTreeMap;

pub struct UsagePlan {
    id: String,
}

/// The stack's usage plan: by recorded id, else by name.
async fn find_plan(
    cx: &Cx,
    recorded: Option<&str>,
) -> Result<Option<aws_sdk_apigateway::types::UsagePlan>> {
    let name = cx.stack.usage_plan_name();
    let mut position = None;
    let mut by_name = None;
    loop {
        let page = cx
            .aws
            .apigateway
            .get_usage_plans()
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("apigateway:GetUsagePlans failed")?;
        for p in page.items() {
            if recorded.is_some() && p.id() == recorded {
                return Ok(Some(p.clone()));
            }
            if by_name.is_none() && p.name() == Some(name.as_str()) {
                by_name = Some(p.clone());
            }
        }
        position = page.position().map(str::to_string);
        if position.is_none() {
            return Ok(by_name);
        }
    }
}

/// The stack's API key (without its value): by recorded id, else by name.
async fn find_key(
    cx: &Cx,
    recorded: Option<&str>,
) -> Result<Option<aws_sdk_apigateway::types::ApiKey>> {
    let name = cx.stack.api_key_name();
    let mut position = None;
    let mut by_name = None;
    loop {
        let page = cx
            .aws
            .apigateway
            .get_api_keys()
            .name_query(&name)
            .include_values(false)
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("apigateway:GetApiKeys failed")?;
        for k in page.items() {
            if recorded.is_some() && k.id() == recorded {
                return Ok(Some(k.clone()));
            }
            if by_name.is_none() && k.name() == Some(name.as_str()) {
                by_name = Some(k.clone());
            }
        }
        position = page.position().map(str::to_string);
        if position.is_none() {
            return Ok(by_name);
        }
    }
}

/// `apiId:stage` as usage plans name their stages in patch operations.
fn stage_ref(api: &str) -> String {
    format!("{api}:{STAGE}")
}

impl UsagePlan {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.usage_plan_name())
    }

    fn live(id: &str) -> Live {
        Live::new(id).attr("id", id)
    }
}

#[async_trait]
impl Resource for UsagePlan {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-usage-plan"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::API_STAGE.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let o = &cx.stack.opts;
        Ok(json!({
            "name": cx.stack.usage_plan_name(),
            "api_stages": [stage_ref(&api_id(cx)?)],
            "throttle": { "rate_limit": o.throttle_rate, "burst_limit": o.throttle_burst },
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(p) = find_plan(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(None);
        };
        let id = p
            .id()
            .context("apigateway:GetUsagePlans returned a plan without id")?;
        if rec.is_none() {
            let what = format!("{} {id}", self.kind());
            crate::engine::claim_owner(cx, &what, &owner_of(&tag_map(p.tags())))?;
        }
        let o = &cx.stack.opts;
        let mut live = Self::live(id);
        let d = &mut live.drift;
        let mut stages: Vec<String> = p
            .api_stages()
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.api_id().unwrap_or_default(),
                    s.stage().unwrap_or_default()
                )
            })
            .collect();
        stages.sort();
        check(d, "api_stages", &vec![stage_ref(&api_id(cx)?)], &stages);
        let t = p.throttle();
        check(
            d,
            "throttle_rate_limit",
            &Some(o.throttle_rate),
            &t.map(|t| t.rate_limit()),
        );
        check(
            d,
            "throttle_burst_limit",
            &Some(o.throttle_burst),
            &t.map(|t| t.burst_limit()),
        );
        d.extend(tags_drift(&self.tags(cx), &tag_map(p.tags())));
        live.owner = owner_of(&tag_map(p.tags()));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let o = &cx.stack.opts;
        let out = cx
            .aws
            .apigateway
            .create_usage_plan()
            .name(cx.stack.usage_plan_name())
            .description(format!(
                "Throttle of the webhook API of stack {}",
                cx.stack.suffix
            ))
            .api_stages(ApiStage::builder().api_id(api_id(cx)?).stage(STAGE).build())
            .throttle(
                ThrottleSettings::builder()
                    .rate_limit(o.throttle_rate)
                    .burst_limit(o.throttle_burst)
                    .build(),
            )
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
            .context("apigateway:CreateUsagePlan failed")?;
        Ok(Self::live(
            out.id()
                .context("apigateway:CreateUsagePlan returned no id")?,
        ))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let o = &cx.stack.opts;
        let gw = &cx.aws.apigateway;
        let id = &live.physical_id;
        let mut ops = Vec::new();
        for d in &live.drift {
            match d.field.as_str() {
                "api_stages" => {
                    let want = stage_ref(&api_id(cx)?);
                    let have: Vec<String> = serde_json::from_str(&d.have).unwrap_or_default();
                    for s in have.iter().filter(|s| **s != want) {
                        ops.push(patch(Op::Remove, "/apiStages", s));
                    }
                    if !have.contains(&want) {
                        ops.push(patch(Op::Add, "/apiStages", want));
                    }
                }
                "throttle_rate_limit" => ops.push(patch(
                    Op::Replace,
                    "/throttle/rateLimit",
                    o.throttle_rate.to_string(),
                )),
                "throttle_burst_limit" => ops.push(patch(
                    Op::Replace,
                    "/throttle/burstLimit",
                    o.throttle_burst.to_string(),
                )),
                "tags" => {
                    gw.tag_resource()
                        .resource_arn(cx.stack.apigateway_arn(&format!("/usageplans/{id}")))
                        .set_tags(Some(self.tags(cx).into_iter().collect()))
                        .send()
                        .await
                        .context("apigateway:TagResource failed")?;
                }
                _ => {}
            }
        }
        if !ops.is_empty() {
            gw.update_usage_plan()
                .usage_plan_id(id)
                .set_patch_operations(Some(ops))
                .send()
                .await
                .context("apigateway:UpdateUsagePlan failed")?;
        }
        Ok(Self::live(id))
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(p) = find_plan(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(false);
        };
        let id = p.id().unwrap_or_default();
        let gw = &cx.aws.apigateway;
        // Detach the stages first: a plan still associated with a stage is
        // refused by some API Gateway versions.
        let ops: Vec<_> = p
            .api_stages()
            .iter()
            .map(|s| {
                patch(
                    Op::Remove,
                    "/apiStages",
                    format!(
                        "{}:{}",
                        s.api_id().unwrap_or_default(),
                        s.stage().unwrap_or_default()
                    ),
                )
            })
            .collect();
        if !ops.is_empty() {
            match gw
                .update_usage_plan()
                .usage_plan_id(id)
                .set_patch_operations(Some(ops))
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, NOT_FOUND) => return Ok(false),
                Err(e) => return Err(e).context("apigateway:UpdateUsagePlan failed"),
            }
        }
        match gw.delete_usage_plan().usage_plan_id(id).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteUsagePlan failed"),
        }
    }
}

pub struct ApiKey {
    id: String,
}

impl ApiKey {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.api_key_name())
    }

    /// Only the key's id and name: never its value.
    fn live(cx: &Cx, id: &str) -> Live {
        Live::new(id)
            .attr("id", id)
            .attr("name", cx.stack.api_key_name())
    }
}

#[async_trait]
impl Resource for ApiKey {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-api-key"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({ "name": cx.stack.api_key_name(), "enabled": true, "tags": self.tags(cx) }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(k) = find_key(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(None);
        };
        let id = k
            .id()
            .context("apigateway:GetApiKeys returned a key without id")?;
        let mut live = Self::live(cx, id);
        check(&mut live.drift, "enabled", &true, &k.enabled());
        live.drift
            .extend(tags_drift(&self.tags(cx), &tag_map(k.tags())));
        live.owner = owner_of(&tag_map(k.tags()));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // No value given: API Gateway generates it.
        let out = cx
            .aws
            .apigateway
            .create_api_key()
            .name(cx.stack.api_key_name())
            .description(format!(
                "Key senders use for the webhook API of stack {}",
                cx.stack.suffix
            ))
            .enabled(true)
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
            .context("apigateway:CreateApiKey failed")?;
        Ok(Self::live(
            cx,
            out.id().context("apigateway:CreateApiKey returned no id")?,
        ))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let gw = &cx.aws.apigateway;
        let id = &live.physical_id;
        for d in &live.drift {
            match d.field.as_str() {
                "enabled" => {
                    gw.update_api_key()
                        .api_key(id)
                        .patch_operations(patch(Op::Replace, "/enabled", "true"))
                        .send()
                        .await
                        .context("apigateway:UpdateApiKey failed")?;
                }
                "tags" => {
                    gw.tag_resource()
                        .resource_arn(cx.stack.apigateway_arn(&format!("/apikeys/{id}")))
                        .set_tags(Some(self.tags(cx).into_iter().collect()))
                        .send()
                        .await
                        .context("apigateway:TagResource failed")?;
                }
                _ => {}
            }
        }
        Ok(Self::live(cx, id))
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(k) = find_key(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(false);
        };
        match cx
            .aws
            .apigateway
            .delete_api_key()
            .api_key(k.id().unwrap_or_default())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteApiKey failed"),
        }
    }
}

/// The API key's membership in the usage plan.
pub struct UsagePlanKey {
    id: String,
}

impl UsagePlanKey {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn live(plan: &str, key: &str) -> Live {
        Live::new(format!("{plan}:{key}"))
            .attr("usage_plan_id", plan)
            .attr("key_id", key)
    }

    fn ids(cx: &Cx) -> Result<(String, String)> {
        Ok((
            cx.attr(ids::USAGE_PLAN, "id")?,
            cx.attr(ids::API_KEY, "id")?,
        ))
    }
}

#[async_trait]
impl Resource for UsagePlanKey {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-usage-plan-key"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::USAGE_PLAN)
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::USAGE_PLAN.into(), ids::API_KEY.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        let (plan, key) = Self::ids(cx)?;
        Ok(json!({ "usage_plan_id": plan, "key_id": key, "key_type": "API_KEY" }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let (plan, key) = Self::ids(cx)?;
        match cx
            .aws
            .apigateway
            .get_usage_plan_key()
            .usage_plan_id(&plan)
            .key_id(&key)
            .send()
            .await
        {
            Ok(_) => Ok(Some(Self::live(&plan, &key))),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(None),
            Err(e) => Err(e).context("apigateway:GetUsagePlanKey failed"),
        }
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let (plan, key) = Self::ids(cx)?;
        cx.aws
            .apigateway
            .create_usage_plan_key()
            .usage_plan_id(&plan)
            .key_id(&key)
            .key_type("API_KEY")
            .send()
            .await
            .context("apigateway:CreateUsagePlanKey failed")?;
        Ok(Self::live(&plan, &key))
    }

    async fn update(&self, _cx: &Cx, live: &Live) -> Result<Live> {
        Ok(live.clone())
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let recorded = |k: &str| rec.and_then(|r| r.attrs.get(k)).cloned();
        let plan = match recorded("usage_plan_id") {
            Some(p) => Some(p),
            None => find_plan(cx, None)
                .await?
                .and_then(|p| p.id().map(str::to_string)),
        };
        let key = match recorded("key_id") {
            Some(k) => Some(k),
            None => find_key(cx, None)
                .await?
                .and_then(|k| k.id().map(str::to_string)),
        };
        let (Some(plan), Some(key)) = (plan, key) else {
            return Ok(false);
        };
        let gw = &cx.aws.apigateway;
        // Look first: moto answers a delete of an unknown membership with a server error.
        match gw
            .get_usage_plan_key()
            .usage_plan_id(&plan)
            .key_id(&key)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, NOT_FOUND) => return Ok(false),
            Err(e) => return Err(e).context("apigateway:GetUsagePlanKey failed"),
        }
        match gw
            .delete_usage_plan_key()
            .usage_plan_id(&plan)
            .key_id(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteUsagePlanKey failed"),
        }
    }
}
