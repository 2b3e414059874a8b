//! A statement of a function's resource policy letting one AWS service
//! invoke it, scoped to one source ARN (and, for S3, whose bucket ARNs carry
//! no account, to the account).

use crate::engine::context::Cx;
use crate::engine::resource::{Drift, Live, Record, Resource};
use crate::resources::is_code;
use crate::stack::{ids, Function};
use anyhow::{Context, Result};
use async_trait::async_trait;
use serde_json::{json, Value};

/// Computes the source ARN once its dependencies are known.
pub type SourceArn = fn(&Cx) -> Result<String>;

pub struct LambdaPermission {
    id: String,
    function: Function,
    /// e.g. `s3.amazonaws.com`, `apigateway.amazonaws.com`.
    principal: &'static str,
    source_arn: SourceArn,
    /// Also require `AWS:SourceAccount` (needed for S3).
    source_account: bool,
    deps: Vec<String>,
}

impl LambdaPermission {
    pub fn new(
        id: &str,
        function: Function,
        principal: &'static str,
        source_arn: SourceArn,
        source_account: bool,
        extra_deps: Vec<String>,
    ) -> Self {
        let mut deps = vec![ids::function(function)];
        deps.extend(extra_deps);
        Self {
            id: id.into(),
            function,
            principal,
            source_arn,
            source_account,
            deps,
        }
    }

    fn statement_id(&self) -> String {
        format!("webhook-deploy-{}", self.id)
    }

    fn function_name(&self, cx: &Cx) -> String {
        cx.stack.function_name(self.function)
    }

    /// The statement's parts we own, in a comparable form.
    fn want(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({
            "action": "lambda:InvokeFunction",
            "principal": self.principal,
            "source_arn": (self.source_arn)(cx)?,
            "source_account": self.source_account.then(|| cx.stack.account.clone()),
        }))
    }

    fn have(stmt: &Value) -> Value {
        let action = match &stmt["Action"] {
            Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let principal = match &stmt["Principal"] {
            Value::Object(o) => o.get("Service").cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let cond = &stmt["Condition"];
        json!({
            "action": action,
            "principal": principal,
            "source_arn": cond["ArnLike"]["AWS:SourceArn"],
            "source_account": cond["StringEquals"]["AWS:SourceAccount"],
        })
    }

    async fn statement(&self, cx: &Cx) -> Result<Option<Value>> {
        let out = match cx
            .aws
            .lambda
            .get_policy()
            .function_name(self.function_name(cx))
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(None),
            Err(e) => return Err(e).context("lambda:GetPolicy failed"),
        };
        let policy: Value = serde_json::from_str(out.policy().unwrap_or("{}"))
            .context("lambda:GetPolicy returned invalid JSON")?;
        let sid = self.statement_id();
        Ok(policy["Statement"]
            .as_array()
            .and_then(|s| s.iter().find(|st| st["Sid"] == sid.as_str()))
            .cloned())
    }

    fn live(&self, cx: &Cx) -> Live {
        Live::new(format!(
            "{}/{}",
            self.function_name(cx),
            self.statement_id()
        ))
        .attr("statement_id", self.statement_id())
    }

    async fn add(&self, cx: &Cx) -> Result<()> {
        let mut req = cx
            .aws
            .lambda
            .add_permission()
            .function_name(self.function_name(cx))
            .statement_id(self.statement_id())
            .action("lambda:InvokeFunction")
            .principal(self.principal)
            .source_arn((self.source_arn)(cx)?);
        if self.source_account {
            req = req.source_account(&cx.stack.account);
        }
        req.send().await.context("lambda:AddPermission failed")?;
        Ok(())
    }

    async fn remove(&self, cx: &Cx) -> Result<bool> {
        match cx
            .aws
            .lambda
            .remove_permission()
            .function_name(self.function_name(cx))
            .statement_id(self.statement_id())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(false),
            Err(e) => Err(e).context("lambda:RemovePermission failed"),
        }
    }
}

#[async_trait]
impl Resource for LambdaPermission {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "lambda-permission"
    }
    fn inside(&self) -> Option<&str> {
        // A new function's policy has no statements.
        self.deps.first().map(String::as_str)
    }
    fn depends_on(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(
            json!({ "function": self.function_name(cx), "statement_id": self.statement_id(), "statement": self.want(cx)? }),
        )
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(stmt) = self.statement(cx).await? else {
            return Ok(None);
        };
        let mut live = self.live(cx);
        let (want, have) = (self.want(cx)?, Self::have(&stmt));
        if want != have {
            live.drift.push(Drift::new("statement", &want, &have));
        }
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // `read` found no statement with this id (or the function is new),
        // so adding cannot conflict.
        self.add(cx).await?;
        Ok(self.live(cx))
    }

    async fn update(&self, cx: &Cx, _live: &Live) -> Result<Live> {
        // A statement cannot be edited: replace it.
        self.remove(cx).await?;
        self.add(cx).await?;
        Ok(self.live(cx))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        self.remove(cx).await
    }
}
