//! IAM execution role of one Lambda function, with its inline policy, and
//! the processor role's separate stream-read policy.

use crate::engine::context::Cx;
use crate::engine::resource::{Drift, Live, Record, Resource};
use crate::resources::{found, is_code, owner_of, read_details, tags_drift};
use crate::stack::{ids, role_policy, stream_policy, Function};
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const POLICY_NAME: &str = "webhook-deploy";
/// The processor role's inline policy for reading the table's stream.
pub const STREAM_POLICY_NAME: &str = "webhook-deploy-stream";

pub struct FunctionRole {
    id: String,
    function: Function,
}

impl FunctionRole {
    pub fn new(id: &str, function: Function) -> Self {
        Self {
            id: id.into(),
            function,
        }
    }

    fn name(&self, cx: &Cx) -> String {
        cx.stack.role_name(self.function)
    }

    fn trust_policy() -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "Service": "lambda.amazonaws.com" },
                "Action": "sts:AssumeRole",
            }],
        })
    }

    fn policy(&self, cx: &Cx) -> Value {
        role_policy(&cx.stack, self.function)
    }

    /// Role names are global to the account: the region tag tells this
    /// stack's roles from those of the same suffix in another region.
    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        let mut tags = cx.stack.tags(&self.id, &self.name(cx));
        tags.insert(crate::stack::TAG_REGION.into(), cx.stack.region.clone());
        tags
    }

    fn live(&self, cx: &Cx, arn: &str) -> Live {
        let name = self.name(cx);
        Live::new(&name).attr("name", &name).attr("arn", arn)
    }
}

/// IAM returns policy documents URL-encoded; compare them as JSON.
fn decode_policy(doc: &str) -> Value {
    let text = urlencoding::decode(doc)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| doc.to_string());
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

#[async_trait]
impl Resource for FunctionRole {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "iam-role"
    }
    fn depends_on(&self) -> Vec<String> {
        // The policy names the table, the bucket and the log group by their
        // ARNs, which follow from their names: IAM does not need them to exist.
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({
            "name": self.name(cx),
            "assume_role_policy": Self::trust_policy(),
            "policy": self.policy(cx),
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        self.read_as(cx, rec.is_some()).await
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let iam = &cx.aws.iam;
        let name = self.name(cx);
        let tags: Vec<_> = self
            .tags(cx)
            .into_iter()
            .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
            .collect::<Result<_, _>>()?;
        let arn = match iam
            .create_role()
            .role_name(&name)
            .description(format!(
                "Execution role of {}",
                cx.stack.function_name(self.function)
            ))
            .assume_role_policy_document(Self::trust_policy().to_string())
            .set_tags(Some(tags))
            .send()
            .await
        {
            Ok(out) => out
                .role()
                .map(|r| r.arn().to_string())
                .context("iam:CreateRole returned no role")?,
            // Created by an earlier, interrupted run: converge it instead.
            Err(e) if is_code(&e, &["EntityAlreadyExists"]) => {
                let live = self
                    .read_as(cx, true)
                    .await?
                    .context("role exists but cannot be read")?;
                return Ok(self.update(cx, &live).await?.adopted());
            }
            Err(e) => return Err(e).context("iam:CreateRole failed"),
        };
        self.put_policy(cx).await?;
        Ok(self.live(cx, &arn))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        let iam = &cx.aws.iam;
        let name = self.name(cx);
        for d in &live.drift {
            match d.field.as_str() {
                "assume_role_policy" => {
                    iam.update_assume_role_policy()
                        .role_name(&name)
                        .policy_document(Self::trust_policy().to_string())
                        .send()
                        .await
                        .context("iam:UpdateAssumeRolePolicy failed")?;
                }
                "policy" => self.put_policy(cx).await?,
                "tags" => {
                    let tags: Vec<_> = self
                        .tags(cx)
                        .into_iter()
                        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
                        .collect::<Result<_, _>>()?;
                    iam.tag_role()
                        .role_name(&name)
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .context("iam:TagRole failed")?;
                }
                _ => {}
            }
        }
        let arn = live.attrs.get("arn").cloned().unwrap_or_default();
        Ok(self.live(cx, &arn))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let iam = &cx.aws.iam;
        let name = self.name(cx);
        if !this_regions_role(cx, &name).await? {
            return Ok(false);
        }
        // A role cannot be deleted while it has inline or attached policies.
        let inline = match iam.list_role_policies().role_name(&name).send().await {
            Ok(o) => o.policy_names().to_vec(),
            Err(e) if is_code(&e, &["NoSuchEntity"]) => return Ok(false),
            Err(e) => return Err(e).context("iam:ListRolePolicies failed"),
        };
        for p in inline {
            delete_inline_policy(cx, &name, &p).await?;
        }
        let attached = iam
            .list_attached_role_policies()
            .role_name(&name)
            .send()
            .await
            .context("iam:ListAttachedRolePolicies failed")?;
        for p in attached.attached_policies() {
            if let Some(arn) = p.policy_arn() {
                iam.detach_role_policy()
                    .role_name(&name)
                    .policy_arn(arn)
                    .send()
                    .await
                    .context("iam:DetachRolePolicy failed")?;
            }
        }
        match iam.delete_role().role_name(&name).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["NoSuchEntity"]) => Ok(false),
            Err(e) => Err(e).context("iam:DeleteRole failed"),
        }
    }
}

impl FunctionRole {
    /// The read, with `recorded` true when the role is known or expected
    /// to exist: its details are then read in the same round as the check.
    async fn read_as(&self, cx: &Cx, recorded: bool) -> Result<Option<Live>> {
        let iam = &cx.aws.iam;
        let name = self.name(cx);
        let role = async {
            let answer = iam.get_role().role_name(&name).send().await;
            found(answer, &["NoSuchEntity"], "iam:GetRole")
        };
        // GetRole answers with all of the role's tags (at most 50), so no
        // ListRoleTags: IAM's request quota is the account's tightest.
        let details = iam
            .get_role_policy()
            .role_name(&name)
            .policy_name(POLICY_NAME)
            .send();
        let Some((role, policy)) = read_details(recorded, role, details).await? else {
            return Ok(None);
        };
        let role = role.role().context("iam:GetRole returned no role")?;
        let mut live = self.live(cx, role.arn());
        let want_trust = Self::trust_policy();
        let have_trust = role
            .assume_role_policy_document()
            .map(decode_policy)
            .unwrap_or(Value::Null);
        if want_trust != have_trust {
            live.drift
                .push(Drift::new("assume_role_policy", &want_trust, &have_trust));
        }
        let want_policy = self.policy(cx);
        let have_policy = match policy {
            Ok(p) => decode_policy(p.policy_document()),
            Err(e) if is_code(&e, &["NoSuchEntity"]) => Value::Null,
            Err(e) => return Err(e).context("iam:GetRolePolicy failed"),
        };
        if want_policy != have_policy {
            live.drift
                .push(Drift::new("policy", &want_policy, &have_policy));
        }
        let have_tags: BTreeMap<String, String> = role
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        live.drift.extend(tags_drift(&self.tags(cx), &have_tags));
        live.owner = owner_of(&have_tags);
        Ok(Some(live))
    }

    async fn put_policy(&self, cx: &Cx) -> Result<()> {
        put_inline_policy(cx, &self.name(cx), POLICY_NAME, &self.policy(cx)).await
    }
}

/// Creates or replaces one inline policy of a role.
async fn put_inline_policy(cx: &Cx, role: &str, name: &str, doc: &Value) -> Result<()> {
    cx.aws
        .iam
        .put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(doc.to_string())
        .send()
        .await
        .context("iam:PutRolePolicy failed")?;
    Ok(())
}

/// Deletes one inline policy of a role; false when it was already gone.
async fn delete_inline_policy(cx: &Cx, role: &str, name: &str) -> Result<bool> {
    match cx
        .aws
        .iam
        .delete_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_code(&e, &["NoSuchEntity"]) => Ok(false),
        Err(e) => Err(e).context("iam:DeleteRolePolicy failed"),
    }
}

/// The processor role's inline stream-read policy: its own resource so the
/// role and the function are created while the table is (CloudFormation's
/// AWS::IAM::Policy split, for the same reason); the stream mapping waits
/// for it, as AWS checks the role's stream access when the mapping is made.
pub struct StreamReadPolicy {
    id: String,
}

impl StreamReadPolicy {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn role(cx: &Cx) -> String {
        cx.stack.role_name(Function::Processor)
    }

    fn policy(cx: &Cx) -> Result<Value> {
        Ok(stream_policy(
            &cx.stack,
            &cx.attr(ids::TABLE, "stream_arn")?,
        ))
    }

    fn live(cx: &Cx) -> Live {
        Live::new(format!("{}/{STREAM_POLICY_NAME}", Self::role(cx)))
    }

    async fn put(cx: &Cx) -> Result<Live> {
        put_inline_policy(cx, &Self::role(cx), STREAM_POLICY_NAME, &Self::policy(cx)?).await?;
        Ok(Self::live(cx))
    }
}

#[async_trait]
impl Resource for StreamReadPolicy {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "iam-role-policy"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::role(Function::Processor), ids::TABLE.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({
            "role": Self::role(cx),
            "name": STREAM_POLICY_NAME,
            "policy": Self::policy(cx)?,
        }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let have = match cx
            .aws
            .iam
            .get_role_policy()
            .role_name(Self::role(cx))
            .policy_name(STREAM_POLICY_NAME)
            .send()
            .await
        {
            Ok(p) => decode_policy(p.policy_document()),
            Err(e) if is_code(&e, &["NoSuchEntity"]) => return Ok(None),
            Err(e) => return Err(e).context("iam:GetRolePolicy failed"),
        };
        let mut live = Self::live(cx);
        let want = Self::policy(cx)?;
        if want != have {
            live.drift.push(Drift::new("policy", &want, &have));
        }
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // PutRolePolicy replaces: creating over a leftover converges it.
        Self::put(cx).await
    }

    async fn update(&self, cx: &Cx, _live: &Live) -> Result<Live> {
        Self::put(cx).await
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let role = Self::role(cx);
        if !this_regions_role(cx, &role).await? {
            return Ok(false);
        }
        delete_inline_policy(cx, &role, STREAM_POLICY_NAME).await
    }
}

/// Before `down` changes role `name`: false when there is no such role, an
/// error when it is the same suffix's role of another region (role names
/// are global to the account), which is that stack's to delete.
async fn this_regions_role(cx: &Cx, name: &str) -> Result<bool> {
    let role = found(
        cx.aws.iam.get_role().role_name(name).send().await,
        &["NoSuchEntity"],
        "iam:GetRole",
    )?;
    let Some(role) = role else {
        return Ok(false);
    };
    let region = role.role().and_then(|r| {
        r.tags()
            .iter()
            .find(|t| t.key() == crate::stack::TAG_REGION)
            .map(|t| t.value().to_string())
    });
    if let Some(other) = region.filter(|r| *r != cx.stack.region) {
        bail!(
            "role {name} belongs to the stack {} in {other} (IAM role names are global to the account): not changed; run down in {other} to delete it",
            cx.stack.suffix
        );
    }
    Ok(true)
}
