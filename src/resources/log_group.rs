//! CloudWatch Logs log group with a retention period.

use crate::engine::context::Cx;
use crate::engine::resource::Owner;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::{is_code, owner_of, read_details, tags_drift};
use anyhow::{Context, Result};
use async_trait::async_trait;
use serde_json::json;
use std::collections::BTreeMap;

pub struct LogGroup {
    id: String,
    name: String,
    retention_days: i32,
}

impl LogGroup {
    pub fn new(id: &str, name: String, retention_days: i32) -> Self {
        Self {
            id: id.into(),
            name,
            retention_days,
        }
    }

    fn arn(&self, cx: &Cx) -> String {
        cx.stack
            .own_arn("logs", &format!("log-group:{}", self.name))
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &self.name)
    }

    fn live(&self, cx: &Cx) -> Live {
        Live::new(&self.name)
            .attr("name", &self.name)
            .attr("arn", self.arn(cx))
    }
}

#[async_trait]
impl Resource for LogGroup {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "log-group"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(
            json!({ "name": self.name, "retention_days": self.retention_days, "tags": self.tags(cx) }),
        )
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let logs = &cx.aws.logs;
        let group = async {
            let groups = logs
                .describe_log_groups()
                .log_group_name_prefix(&self.name)
                .send()
                .await
                .context("logs:DescribeLogGroups failed")?;
            Ok(groups
                .log_groups()
                .iter()
                .find(|g| g.log_group_name() == Some(self.name.as_str()))
                .map(|g| g.retention_in_days()))
        };
        let tags = logs
            .list_tags_for_resource()
            .resource_arn(self.arn(cx))
            .send();
        let Some((retention, tags)) = read_details(rec.is_some(), group, tags).await? else {
            return Ok(None);
        };
        let have_tags: BTreeMap<String, String> = match tags {
            Ok(t) => t.tags().cloned().unwrap_or_default().into_iter().collect(),
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => BTreeMap::new(),
            Err(e) => return Err(e).context("logs:ListTagsForResource failed"),
        };
        let mut live = self.live(cx);
        check(
            &mut live.drift,
            "retention_days",
            &Some(self.retention_days),
            &retention,
        );
        live.drift.extend(tags_drift(&self.tags(cx), &have_tags));
        // Lambda itself creates an untagged `/aws/lambda/<function>` when
        // the function logs (a late line after `down`): ours to adopt.
        live.owner = match owner_of(&have_tags) {
            Owner::Untagged => Owner::Unknown,
            o => o,
        };
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let logs = &cx.aws.logs;
        // A late log line from a deleted function recreates its group, so an
        // existing one is adopted rather than treated as an error.
        let adopted = match logs
            .create_log_group()
            .log_group_name(&self.name)
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
        {
            Ok(_) => false,
            Err(e) if is_code(&e, &["ResourceAlreadyExistsException"]) => {
                self.put_tags(cx).await?;
                true
            }
            Err(e) => return Err(e).context("logs:CreateLogGroup failed"),
        };
        self.put_retention(cx).await?;
        let live = self.live(cx);
        Ok(if adopted { live.adopted() } else { live })
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        for d in &live.drift {
            match d.field.as_str() {
                "retention_days" => self.put_retention(cx).await?,
                "tags" => self.put_tags(cx).await?,
                _ => {}
            }
        }
        Ok(self.live(cx))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        match cx
            .aws
            .logs
            .delete_log_group()
            .log_group_name(&self.name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["ResourceNotFoundException"]) => Ok(false),
            Err(e) => Err(e).context("logs:DeleteLogGroup failed"),
        }
    }
}

impl LogGroup {
    async fn put_tags(&self, cx: &Cx) -> Result<()> {
        cx.aws
            .logs
            .tag_resource()
            .resource_arn(self.arn(cx))
            .set_tags(Some(self.tags(cx).into_iter().collect()))
            .send()
            .await
            .context("logs:TagResource failed")?;
        Ok(())
    }

    async fn put_retention(&self, cx: &Cx) -> Result<()> {
        cx.aws
            .logs
            .put_retention_policy()
            .log_group_name(&self.name)
            .retention_in_days(self.retention_days)
            .send()
            .await
            .context("logs:PutRetentionPolicy failed")?;
        Ok(())
    }
}
