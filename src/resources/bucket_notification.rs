//! The archive bucket's event notification: a failure record written by the
//! stream mapping's on-failure destination (under the failure-record prefix)
//! invokes the dead-letter handler. Only our configuration (by its id) is
//! owned; others on the bucket are kept as they are.

use crate::engine::context::Cx;
use crate::engine::resource::{Drift, Live, Record, Resource};
use crate::layout;
use crate::resources::is_code;
use crate::stack::{ids, Function};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, LambdaFunctionConfiguration, NotificationConfiguration,
    NotificationConfigurationFilter, S3KeyFilter,
};
use serde_json::{json, Value};

/// The id of our entry in the bucket's notification configuration.
pub const CONFIG_ID: &str = "webhook-deploy-failure-records";
pub const EVENT: &str = "s3:ObjectCreated:*";

pub struct FailureNotification {
    id: String,
}

impl FailureNotification {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn want(cx: &Cx) -> Result<Value> {
        Ok(json!({
            "function": cx.attr(&ids::function(Function::DeadLetter), "arn")?,
            "events": [EVENT],
            "prefix": layout::FAILURE_RECORD_PREFIX,
        }))
    }

    fn have(c: &LambdaFunctionConfiguration) -> Value {
        let prefix = c
            .filter()
            .and_then(|f| f.key())
            .map(|k| k.filter_rules())
            .unwrap_or_default()
            .iter()
            .find(|r| {
                r.name()
                    .is_some_and(|n| n.as_str().eq_ignore_ascii_case("prefix"))
            })
            .and_then(|r| r.value());
        json!({
            "function": c.lambda_function_arn(),
            "events": c.events().iter().map(|e| e.as_str()).collect::<Vec<_>>(),
            "prefix": prefix,
        })
    }

    fn config(cx: &Cx) -> Result<LambdaFunctionConfiguration> {
        Ok(LambdaFunctionConfiguration::builder()
            .id(CONFIG_ID)
            .lambda_function_arn(cx.attr(&ids::function(Function::DeadLetter), "arn")?)
            .events(Event::from(EVENT))
            .filter(
                NotificationConfigurationFilter::builder()
                    .key(
                        S3KeyFilter::builder()
                            .filter_rules(
                                FilterRule::builder()
                                    .name(FilterRuleName::Prefix)
                                    .value(layout::FAILURE_RECORD_PREFIX)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()?)
    }

    async fn get(cx: &Cx) -> Result<Option<GetBucketNotificationConfigurationOutput>> {
        match cx
            .aws
            .s3
            .get_bucket_notification_configuration()
            .bucket(cx.stack.bucket_name())
            .send()
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(e) if is_code(&e, &["NoSuchBucket"]) => Ok(None),
            // moto 5.2 answers an empty configuration with a
            // `<GetBucketNotificationResponse/>` root the SDK rejects.
            Err(e) if is_empty_moto_document(&e) => Ok(Some(
                GetBucketNotificationConfigurationOutput::builder().build(),
            )),
            Err(e) => Err(e).context("s3:GetBucketNotificationConfiguration failed"),
        }
    }

    /// Puts the bucket's configuration with ours replaced (or removed).
    async fn put(
        cx: &Cx,
        current: &GetBucketNotificationConfigurationOutput,
        ours: Option<LambdaFunctionConfiguration>,
    ) -> Result<()> {
        let mut lambdas: Vec<LambdaFunctionConfiguration> = current
            .lambda_function_configurations()
            .iter()
            .filter(|c| c.id() != Some(CONFIG_ID))
            .cloned()
            .collect();
        lambdas.extend(ours);
        let conf = NotificationConfiguration::builder()
            .set_lambda_function_configurations(Some(lambdas))
            .set_topic_configurations(Some(current.topic_configurations().to_vec()))
            .set_queue_configurations(Some(current.queue_configurations().to_vec()))
            .set_event_bridge_configuration(current.event_bridge_configuration().cloned())
            .build();
        cx.aws
            .s3
            .put_bucket_notification_configuration()
            .bucket(cx.stack.bucket_name())
            .notification_configuration(conf)
            .send()
            .await
            .context("s3:PutBucketNotificationConfiguration failed")?;
        Ok(())
    }

    fn live(cx: &Cx) -> Live {
        Live::new(format!("{}/{CONFIG_ID}", cx.stack.bucket_name())).attr("id", CONFIG_ID)
    }
}

fn is_empty_moto_document<E>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    let Some(raw) = e.raw_response() else {
        return false;
    };
    let body = raw
        .body()
        .bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default();
    raw.status().is_success()
        && body.contains("<GetBucketNotificationResponse")
        && body.trim_end().ends_with("/>")
}

#[async_trait]
impl Resource for FailureNotification {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "s3-notification"
    }
    fn inside(&self) -> Option<&str> {
        Some(ids::BUCKET)
    }
    fn depends_on(&self) -> Vec<String> {
        // S3 checks that it may invoke the function when the configuration is put.
        vec![
            ids::BUCKET.into(),
            ids::function(Function::DeadLetter),
            ids::FAILURE_PERMISSION.into(),
        ]
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({ "bucket": cx.stack.bucket_name(), "id": CONFIG_ID, "config": Self::want(cx)? }))
    }

    async fn read(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<Live>> {
        let Some(current) = Self::get(cx).await? else {
            return Ok(None);
        };
        let Some(ours) = current
            .lambda_function_configurations()
            .iter()
            .find(|c| c.id() == Some(CONFIG_ID))
        else {
            return Ok(None);
        };
        let mut live = Self::live(cx);
        let (want, have) = (Self::want(cx)?, Self::have(ours));
        if want != have {
            live.drift.push(Drift::new("configuration", &want, &have));
        }
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        // Others' entries are kept; a bucket this run created has none.
        let current = if cx.container_is_new() {
            GetBucketNotificationConfigurationOutput::builder().build()
        } else {
            Self::get(cx)
                .await?
                .context("the archive bucket does not exist")?
        };
        Self::put(cx, &current, Some(Self::config(cx)?)).await?;
        Ok(Self::live(cx))
    }

    async fn update(&self, cx: &Cx, _live: &Live) -> Result<Live> {
        self.create(cx).await
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let Some(current) = Self::get(cx).await? else {
            return Ok(false);
        };
        if !current
            .lambda_function_configurations()
            .iter()
            .any(|c| c.id() == Some(CONFIG_ID))
        {
            return Ok(false);
        }
        Self::put(cx, &current, None).await?;
        Ok(true)
    }
}
