//! SNS topic the alarms notify, with the optional `--alarm-email`
//! subscription (added when the flag is given, removed when it is dropped).

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::resources::{found, is_code, owner_of, read_details, tags_drift};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_sns::types::Tag;
use serde_json::json;
use std::collections::BTreeMap;

/// SNS lists an unconfirmed email subscription with this instead of an ARN;
/// it cannot be unsubscribed (SNS drops it after three days).
const PENDING: &str = "PendingConfirmation";

pub struct AlarmTopic {
    id: String,
}

/// One email subscription of the topic.
struct EmailSub {
    endpoint: String,
    arn: String,
}

impl AlarmTopic {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn arn(cx: &Cx) -> String {
        cx.stack.own_arn("sns", &cx.stack.alarm_topic_name())
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.alarm_topic_name())
    }

    fn live(cx: &Cx) -> Live {
        let arn = Self::arn(cx);
        Live::new(&arn)
            .attr("arn", &arn)
            .attr("name", cx.stack.alarm_topic_name())
    }

    async fn email_subs(cx: &Cx, arn: &str) -> Result<Vec<EmailSub>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = cx
                .aws
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(arn)
                .set_next_token(token)
                .send()
                .await
                .context("sns:ListSubscriptionsByTopic failed")?;
            for s in page.subscriptions() {
                if s.protocol() == Some("email") {
                    out.push(EmailSub {
                        endpoint: s.endpoint().unwrap_or_default().to_string(),
                        arn: s.subscription_arn().unwrap_or_default().to_string(),
                    });
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Adds the wanted address and removes the others (ours to manage: the
    /// topic belongs to the stack).
    async fn converge_email(&self, cx: &Cx) -> Result<()> {
        let arn = Self::arn(cx);
        let want = cx.stack.opts.alarm_email.clone();
        let have = Self::email_subs(cx, &arn).await?;
        if let Some(email) = &want {
            if !have.iter().any(|s| &s.endpoint == email) {
                cx.aws
                    .sns
                    .subscribe()
                    .topic_arn(&arn)
                    .protocol("email")
                    .endpoint(email)
                    .send()
                    .await
                    .context("sns:Subscribe failed")?;
            }
        }
        for s in have.iter().filter(|s| Some(&s.endpoint) != want.as_ref()) {
            if s.arn == PENDING {
                cx.say(format!(
                    "{} has not confirmed; SNS removes it after 3 days",
                    s.endpoint
                ));
                continue;
            }
            match cx
                .aws
                .sns
                .unsubscribe()
                .subscription_arn(&s.arn)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, &["NotFound"]) => {}
                Err(e) => return Err(e).context("sns:Unsubscribe failed"),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Resource for AlarmTopic {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "sns-topic"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({
            "name": cx.stack.alarm_topic_name(),
            "alarm_email": cx.stack.opts.alarm_email,
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let sns = &cx.aws.sns;
        let arn = Self::arn(cx);
        let topic = async {
            let answer = sns.get_topic_attributes().topic_arn(&arn).send().await;
            found(
                answer,
                &["NotFound", "NotFoundException"],
                "sns:GetTopicAttributes",
            )
        };
        let details = futures::future::join(
            sns.list_tags_for_resource().resource_arn(&arn).send(),
            Self::email_subs(cx, &arn),
        );
        // The ARN is known from the name: when the state file says the
        // topic exists, everything in one round of reads.
        let Some((_, (tags, subs))) = read_details(rec.is_some(), topic, details).await? else {
            return Ok(None);
        };
        let have_tags: BTreeMap<String, String> = tags
            .context("sns:ListTagsForResource failed")?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        let want = cx.stack.opts.alarm_email.clone();
        // An unconfirmed address we no longer want cannot be removed: not drift.
        let have: Vec<String> = subs?
            .into_iter()
            .filter(|s| s.arn != PENDING || Some(&s.endpoint) == want.as_ref())
            .map(|s| s.endpoint)
            .collect();
        let mut live = Self::live(cx);
        check(
            &mut live.drift,
            "alarm_email",
            &want.into_iter().collect::<Vec<_>>(),
            &have,
        );
        live.drift.extend(tags_drift(&self.tags(cx), &have_tags));
        live.owner = owner_of(&have_tags);
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let tags: Vec<Tag> = self
            .tags(cx)
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<_, _>>()?;
        // CreateTopic is idempotent by name, so an interrupted run converges.
        cx.aws
            .sns
            .create_topic()
            .name(cx.stack.alarm_topic_name())
            .set_tags(Some(tags))
            .send()
            .await
            .context("sns:CreateTopic failed")?;
        self.converge_email(cx).await?;
        Ok(Self::live(cx))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        for d in &live.drift {
            match d.field.as_str() {
                "alarm_email" => self.converge_email(cx).await?,
                "tags" => {
                    let tags: Vec<Tag> = self
                        .tags(cx)
                        .into_iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect::<Result<_, _>>()?;
                    cx.aws
                        .sns
                        .tag_resource()
                        .resource_arn(Self::arn(cx))
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .context("sns:TagResource failed")?;
                }
                _ => {}
            }
        }
        Ok(Self::live(cx))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let sns = &cx.aws.sns;
        let arn = Self::arn(cx);
        match sns.get_topic_attributes().topic_arn(&arn).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["NotFound", "NotFoundException"]) => return Ok(false),
            Err(e) => return Err(e).context("sns:GetTopicAttributes failed"),
        }
        // Deleting a topic deletes its subscriptions.
        sns.delete_topic()
            .topic_arn(&arn)
            .send()
            .await
            .context("sns:DeleteTopic failed")?;
        Ok(true)
    }
}
