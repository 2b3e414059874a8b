//! API Gateway REST API (REGIONAL), its `/webhook` resource, and the POST
//! method with its AWS_PROXY integration to the receiver. Also the helpers
//! the other API Gateway resources share.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::{is_code, owner_of, retry_while, tags_drift};
use crate::stack::{ids, Function, WEBHOOK_PATH_PART};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_apigateway::types::{
    ApiKeySourceType, EndpointConfiguration, EndpointType, IntegrationType, Op, PatchOperation,
};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub const NOT_FOUND: &[&str] = &["NotFoundException"];
/// API Gateway's control-plane quotas are low (CreateDeployment 1 per 5 s,
/// DeleteRestApi 1 per 30 s); the SDK's adaptive retry backs off first,
/// this bounds the extra waiting on top of it.
pub const THROTTLED: &[&str] = &["TooManyRequestsException"];
pub const THROTTLE_WAIT: Duration = Duration::from_secs(300);
const METHOD: &str = "POST";

pub fn patch(op: Op, path: &str, value: impl Into<String>) -> PatchOperation {
    PatchOperation::builder()
        .op(op)
        .path(path)
        .value(value)
        .build()
}

pub fn tag_map(tags: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The API id of a dependency-ordered run.
pub fn api_id(cx: &Cx) -> Result<String> {
    Ok(cx.attr(ids::API, "id")?)
}

/// The API id when deleting: from the record, else found by name (state lost).
pub async fn api_id_for_delete(cx: &Cx, rec: Option<&Record>) -> Result<Option<String>> {
    if let Some(id) = rec.and_then(|r| r.attrs.get("api_id")) {
        return Ok(Some(id.clone()));
    }
    Ok(find_api(cx, None)
        .await?
        .and_then(|a| a.id().map(str::to_string)))
}

/// The stack's REST API: the recorded id if it still exists, else the one
/// named `webhook-api-<suffix>` (not one tagged for another stack).
pub async fn find_api(
    cx: &Cx,
    recorded: Option<&str>,
) -> Result<Option<aws_sdk_apigateway::types::RestApi>> {
    let name = cx.stack.api_name();
    let mut position = None;
    let mut by_name = None;
    loop {
        let page = cx
            .aws
            .apigateway
            .get_rest_apis()
            .limit(500)
            .set_position(position)
            .send()
            .await
            .context("apigateway:GetRestApis failed")?;
        for api in page.items() {
            if recorded.is_some() && api.id() == recorded {
                return Ok(Some(api.clone()));
            }
            let stack_tag = api.tags().and_then(|t| t.get(crate::stack::TAG_STACK));
            if by_name.is_none()
                && api.name() == Some(name.as_str())
                && stack_tag.is_none_or(|s| *s == cx.stack.suffix)
            {
                by_name = Some(api.clone());
            }
        }
        position = page.position().map(str::to_string);
        if position.is_none() {
            return Ok(by_name);
        }
    }
}

/// The API definition a deployment snapshots: resources, methods,
/// integrations. Its hash names the deployment that serves it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Definition {
    pub path: String,
    pub http_method: String,
    pub authorization_type: String,
    pub api_key_required: bool,
    pub integration_type: String,
    pub integration_http_method: String,
    pub integration_uri: String,
}

impl Definition {
    pub fn desired(cx: &Cx) -> Result<Self> {
        // Known from the name: the API is defined while the function is created.
        let function_arn = cx.stack.function_arn(Function::Receiver);
        Ok(Self {
            path: format!("/{WEBHOOK_PATH_PART}"),
            http_method: METHOD.into(),
            authorization_type: "NONE".into(),
            api_key_required: cx.stack.opts.api_key_required,
            integration_type: "AWS_PROXY".into(),
            // Lambda proxy integrations always call Lambda with POST.
            integration_http_method: "POST".into(),
            integration_uri: cx.stack.arn(
                "apigateway",
                &cx.stack.region,
                "lambda",
                &format!("path/2015-03-31/functions/{function_arn}/invocations"),
            ),
        })
    }

    /// Short, stable hash (struct fields serialize in declaration order).
    pub fn fingerprint(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

// ---------------------------------------------------------------- REST API

pub struct RestApi {
    id: String,
}

impl RestApi {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.api_name())
    }

    fn live(cx: &Cx, id: &str, root: &str) -> Live {
        Live::new(id)
            .attr("id", id)
            .attr("api_id", id)
            .attr("root_resource_id", root)
            .attr("execution_arn", cx.stack.own_arn("execute-api", id))
    }

    fn arn(cx: &Cx, id: &str) -> String {
        cx.stack.apigateway_arn(&format!("/restapis/{id}"))
    }
}

#[async_trait]
impl Resource for RestApi {
    fn id(&self) -> &str {
        &self.id
    }

    /// DeleteRestApi takes the routes, methods, deployments and stages
    /// along: `down` spends no calls on them (API Gateway's control plane
    /// is rate-limited hard).
    fn deletes_contents(&self) -> bool {
        true
    }
    fn kind(&self) -> &'static str {
        "apigw-rest-api"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({
            "name": cx.stack.api_name(),
            "endpoint_types": ["REGIONAL"],
            "api_key_source": "HEADER",
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(api) = find_api(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(None);
        };
        let id = api
            .id()
            .context("apigateway:GetRestApis returned an API without id")?;
        let mut live = Self::live(cx, id, api.root_resource_id().unwrap_or_default());
        let types: Vec<&str> = api
            .endpoint_configuration()
            .map(|e| e.types().iter().map(|t| t.as_str()).collect())
            .unwrap_or_default();
        check(&mut live.drift, "endpoint_types", &vec!["REGIONAL"], &types);
        check(
            &mut live.drift,
            "api_key_source",
            &Some("HEADER"),
            &api.api_key_source().map(|s| s.as_str()),
        );
        live.drift
            .extend(tags_drift(&self.tags(cx), &tag_map(api.tags())));
        live.owner = owner_of(&tag_map(api.tags()));
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // Tagged at creation: TagResource on a REST API ARN also works on
        // AWS, but moto rejects it.
        let out = cx
            .aws
            .apigateway
            .create_rest_api()
            .name(cx.stack.api_name())
            .description(format!(
                "Webhook receiver of stack {} (managed by webhook-deploy)",
                cx.stack.suffix
            ))
            .endpoint_configuration(
                EndpointConfiguration::builder()
                    .types(EndpointType::Regional)
                    .build(),
            )
            .api_key_source(ApiKeySourceType::Header)
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
            .context("apigateway:CreateRestApi failed")?;
        let id = out
            .id()
            .context("apigateway:CreateRestApi returned no id")?;
        Ok(Self::live(
            cx,
            id,
            out.root_resource_id().unwrap_or_default(),
        ))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let gw = &cx.aws.apigateway;
        let id = &live.physical_id;
        let mut ops = Vec::new();
        for d in &live.drift {
            match d.field.as_str() {
                "endpoint_types" => {
                    // One endpoint type per API: replace whichever is there.
                    let have: Vec<String> = serde_json::from_str(&d.have).unwrap_or_default();
                    for t in have.iter().filter(|t| *t != "REGIONAL") {
                        ops.push(patch(
                            Op::Replace,
                            &format!("/endpointConfiguration/types/{t}"),
                            "REGIONAL",
                        ));
                    }
                }
                "api_key_source" => ops.push(patch(Op::Replace, "/apiKeySource", "HEADER")),
                "tags" => {
                    gw.tag_resource()
                        .resource_arn(Self::arn(cx, id))
                        .set_tags(Some(self.tags(cx).into_iter().collect()))
                        .send()
                        .await
                        .context("apigateway:TagResource failed")?;
                }
                _ => {}
            }
        }
        if !ops.is_empty() {
            gw.update_rest_api()
                .rest_api_id(id)
                .set_patch_operations(Some(ops))
                .send()
                .await
                .context("apigateway:UpdateRestApi failed")?;
        }
        Ok(live.clone())
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(api) = find_api(cx, rec.map(|r| r.physical_id.as_str())).await? else {
            return Ok(false);
        };
        let id = api.id().unwrap_or_default().to_string();
        let res = retry_while(
            cx,
            THROTTLED,
            THROTTLE_WAIT,
            "API Gateway's DeleteRestApi quota (1 per 30 s)",
            || cx.aws.apigateway.delete_rest_api().rest_api_id(&id).send(),
        )
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteRestApi failed"),
        }
    }
}

// ---------------------------------------------------------- /webhook route

pub struct ApiRoute {
    id: String,
}

impl ApiRoute {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    async fn find(cx: &Cx, api: &str) -> Result<Option<String>> {
        let path = format!("/{WEBHOOK_PATH_PART}");
        let mut position = None;
        loop {
            let page = match cx
                .aws
                .apigateway
                .get_resources()
                .rest_api_id(api)
                .limit(500)
                .set_position(position)
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if is_code(&e, NOT_FOUND) => return Ok(None),
                Err(e) => return Err(e).context("apigateway:GetResources failed"),
            };
            if let Some(r) = page
                .items()
                .iter()
                .find(|r| r.path() == Some(path.as_str()))
            {
                return Ok(r.id().map(str::to_string));
            }
            position = page.position().map(str::to_string);
            if position.is_none() {
                return Ok(None);
            }
        }
    }

    fn live(api: &str, id: &str) -> Live {
        Live::new(id).attr("id", id).attr("api_id", api)
    }
}

#[async_trait]
impl Resource for ApiRoute {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-resource"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::API)
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::API.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({ "api_id": api_id(cx)?, "path": format!("/{WEBHOOK_PATH_PART}") }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let api = api_id(cx)?;
        Ok(Self::find(cx, &api).await?.map(|id| Self::live(&api, &id)))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let api = api_id(cx)?;
        let root = cx.attr(ids::API, "root_resource_id")?;
        let out = cx
            .aws
            .apigateway
            .create_resource()
            .rest_api_id(&api)
            .parent_id(root)
            .path_part(WEBHOOK_PATH_PART)
            .send()
            .await
            .context("apigateway:CreateResource failed")?;
        Ok(Self::live(
            &api,
            out.id()
                .context("apigateway:CreateResource returned no id")?,
        ))
    }

    async fn update(&self, _cx: &Cx, live: &Live) -> Result<Live> {
        Ok(live.clone())
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(api) = api_id_for_delete(cx, rec).await? else {
            return Ok(false);
        };
        let Some(id) = Self::find(cx, &api).await? else {
            return Ok(false);
        };
        match cx
            .aws
            .apigateway
            .delete_resource()
            .rest_api_id(&api)
            .resource_id(&id)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteResource failed"),
        }
    }
}

// ----------------------------------------------- POST method + integration

pub struct ApiMethod {
    id: String,
}

impl ApiMethod {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn live(cx: &Cx) -> Result<Live> {
        let api = api_id(cx)?;
        let route = cx.attr(ids::API_ROUTE, "id")?;
        Ok(Live::new(format!("{api}/{route}/{METHOD}"))
            .attr("api_id", api)
            .attr("resource_id", route)
            .attr("http_method", METHOD))
    }

    async fn put_method(cx: &Cx, def: &Definition) -> Result<()> {
        cx.aws
            .apigateway
            .put_method()
            .rest_api_id(api_id(cx)?)
            .resource_id(cx.attr(ids::API_ROUTE, "id")?)
            .http_method(METHOD)
            .authorization_type(&def.authorization_type)
            .api_key_required(def.api_key_required)
            .send()
            .await
            .context("apigateway:PutMethod failed")?;
        Ok(())
    }

    async fn put_integration(cx: &Cx, def: &Definition) -> Result<()> {
        // PutIntegration replaces the whole integration.
        cx.aws
            .apigateway
            .put_integration()
            .rest_api_id(api_id(cx)?)
            .resource_id(cx.attr(ids::API_ROUTE, "id")?)
            .http_method(METHOD)
            .r#type(IntegrationType::from(def.integration_type.as_str()))
            .integration_http_method(&def.integration_http_method)
            .uri(&def.integration_uri)
            .send()
            .await
            .context("apigateway:PutIntegration failed")?;
        Ok(())
    }
}

#[async_trait]
impl Resource for ApiMethod {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "apigw-method"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::API_ROUTE)
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::API_ROUTE.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(Definition::desired(cx)?)?)
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let want = Definition::desired(cx)?;
        let out = match cx
            .aws
            .apigateway
            .get_method()
            .rest_api_id(api_id(cx)?)
            .resource_id(cx.attr(ids::API_ROUTE, "id")?)
            .http_method(METHOD)
            .send()
            .await
        {
            Ok(m) => m,
            Err(e) if is_code(&e, NOT_FOUND) => return Ok(None),
            Err(e) => return Err(e).context("apigateway:GetMethod failed"),
        };
        let mut live = Self::live(cx)?;
        let d = &mut live.drift;
        check(
            d,
            "authorization_type",
            &Some(want.authorization_type.as_str()),
            &out.authorization_type(),
        );
        check(
            d,
            "api_key_required",
            &want.api_key_required,
            &out.api_key_required().unwrap_or(false),
        );
        let i = out.method_integration();
        check(
            d,
            "integration_type",
            &Some(want.integration_type.as_str()),
            &i.and_then(|i| i.r#type()).map(|t| t.as_str()),
        );
        check(
            d,
            "integration_http_method",
            &Some(want.integration_http_method.as_str()),
            &i.and_then(|i| i.http_method()),
        );
        check(
            d,
            "integration_uri",
            &Some(want.integration_uri.as_str()),
            &i.and_then(|i| i.uri()),
        );
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let def = Definition::desired(cx)?;
        Self::put_method(cx, &def).await?;
        Self::put_integration(cx, &def).await?;
        Self::live(cx)
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let def = Definition::desired(cx)?;
        let method_changed = live
            .drift
            .iter()
            .any(|d| !d.field.starts_with("integration_"));
        if method_changed {
            // Replaced rather than patched (moto lacks UpdateMethod). Safe on
            // AWS too: callers hit the stage's deployed snapshot, and the
            // deployment that follows captures the new definition.
            match cx
                .aws
                .apigateway
                .delete_method()
                .rest_api_id(api_id(cx)?)
                .resource_id(cx.attr(ids::API_ROUTE, "id")?)
                .http_method(METHOD)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, NOT_FOUND) => {}
                Err(e) => return Err(e).context("apigateway:DeleteMethod failed"),
            }
            Self::put_method(cx, &def).await?;
            Self::put_integration(cx, &def).await?;
        } else if !live.drift.is_empty() {
            Self::put_integration(cx, &def).await?;
        }
        Self::live(cx)
    }

    async fn delete(&self, cx: &Cx, rec: Option<&Record>) -> Result<bool> {
        let Some(api) = api_id_for_delete(cx, rec).await? else {
            return Ok(false);
        };
        let Some(route) = ApiRoute::find(cx, &api).await? else {
            return Ok(false);
        };
        match cx
            .aws
            .apigateway
            .delete_method()
            .rest_api_id(&api)
            .resource_id(&route)
            .http_method(METHOD)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, NOT_FOUND) => Ok(false),
            Err(e) => Err(e).context("apigateway:DeleteMethod failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(key: bool, uri: &str) -> Definition {
        Definition {
            path: "/webhook".into(),
            http_method: "POST".into(),
            authorization_type: "NONE".into(),
            api_key_required: key,
            integration_type: "AWS_PROXY".into(),
            integration_http_method: "POST".into(),
            integration_uri: uri.into(),
        }
    }

    #[test]
    fn fingerprint_is_stable_and_changes_with_the_definition() {
        let a = def(true, "arn:1");
        assert_eq!(a.fingerprint(), def(true, "arn:1").fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert_ne!(a.fingerprint(), def(false, "arn:1").fingerprint());
        assert_ne!(a.fingerprint(), def(true, "arn:2").fingerprint());
    }
}
