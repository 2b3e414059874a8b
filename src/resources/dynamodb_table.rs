//! The DynamoDB events table: key `eventId` only, on-demand, PITR, SSE,
//! stream NEW_AND_OLD_IMAGES, TTL on `expiresAt`.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Drift, Live, Record, Resource};
use crate::resources::{found, is_code, owner_of, read_details, retry_while, tags_drift};
use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, Select, SseSpecification, SseStatus, StreamSpecification, StreamViewType,
    TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

pub const KEY: &str = "eventId";
pub const TTL_ATTRIBUTE: &str = "expiresAt";

pub struct EventsTable {
    id: String,
}

impl EventsTable {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.table_name())
    }

    fn aws_tags(&self, cx: &Cx) -> Result<Vec<Tag>> {
        self.tags(cx)
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(Into::into))
            .collect()
    }
}

fn live(name: &str, arn: &str, stream_arn: Option<&str>) -> Live {
    let mut l = Live::new(name).attr("name", name).attr("arn", arn);
    if let Some(s) = stream_arn {
        l = l.attr("stream_arn", s);
    }
    l
}

#[async_trait]
impl Resource for EventsTable {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "dynamodb-table"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({
            "name": cx.stack.table_name(),
            "key": KEY,
            "billing_mode": "PAY_PER_REQUEST",
            "deletion_protection": true,
            "point_in_time_recovery": true,
            "sse": true,
            "stream": "NEW_AND_OLD_IMAGES",
            "ttl_attribute": TTL_ATTRIBUTE,
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        self.read_as(cx, rec.is_some()).await
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let db = &cx.aws.dynamodb;
        let name = cx.stack.table_name();
        let created = db
            .create_table()
            .table_name(&name)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .deletion_protection_enabled(true)
            .sse_specification(SseSpecification::builder().enabled(true).build())
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()?,
            )
            .set_tags(Some(self.aws_tags(cx)?))
            .send()
            .await;
        let created = match created {
            Ok(out) => out,
            // An interrupted earlier run created it: converge it instead.
            Err(e) if is_code(&e, &["ResourceInUseException"]) => {
                let l = self
                    .read_as(cx, true)
                    .await?
                    .context("table exists but cannot be read")?;
                return Ok(self.update(cx, &l).await?.adopted());
            }
            Err(e) => return Err(e).context("dynamodb:CreateTable failed"),
        };
        let t = created
            .table_description()
            .context("dynamodb:CreateTable returned no table description")?;
        if t.table_status() != Some(&TableStatus::Active) {
            wait_active(cx, "waiting for the table to become ACTIVE").await?;
        }
        // Independent settings: both at once.
        tokio::try_join!(self.enable_pitr(cx), self.enable_ttl(cx))?;
        // CreateTable's answer names the table and its stream: no re-read
        // (unless the stream is missing from it).
        if t.latest_stream_arn().is_none() {
            return self
                .read_as(cx, true)
                .await?
                .context("the table vanished right after creation");
        }
        let arn = cx.stack.table_arn();
        Ok(live(
            &name,
            t.table_arn().unwrap_or(&arn),
            t.latest_stream_arn(),
        ))
    }

    async fn update(&self, cx: &Cx, l: &Live) -> Result<Live> {
        let db = &cx.aws.dynamodb;
        let name = cx.stack.table_name();
        let mut table_update = db.update_table().table_name(&name);
        let mut needs_table_update = false;
        for Drift { field, .. } in &l.drift {
            match field.as_str() {
                "billing_mode" => {
                    table_update = table_update.billing_mode(BillingMode::PayPerRequest);
                    needs_table_update = true;
                }
                "deletion_protection" => {
                    table_update = table_update.deletion_protection_enabled(true);
                    needs_table_update = true;
                }
                "sse" => {
                    table_update = table_update
                        .sse_specification(SseSpecification::builder().enabled(true).build());
                    needs_table_update = true;
                }
                "stream" => {
                    table_update = table_update.stream_specification(
                        StreamSpecification::builder()
                            .stream_enabled(true)
                            .stream_view_type(StreamViewType::NewAndOldImages)
                            .build()?,
                    );
                    needs_table_update = true;
                }
                "point_in_time_recovery" => self.enable_pitr(cx).await?,
                "ttl_attribute" => self.enable_ttl(cx).await?,
                "tags" => {
                    db.tag_resource()
                        .resource_arn(cx.stack.table_arn())
                        .set_tags(Some(self.aws_tags(cx)?))
                        .send()
                        .await
                        .context("dynamodb:TagResource failed")?;
                }
                _ => {}
            }
        }
        if needs_table_update {
            table_update
                .send()
                .await
                .context("dynamodb:UpdateTable failed")?;
            wait_active(cx, "waiting for the table update to finish").await?;
        }
        let mut after = self
            .read_as(cx, true)
            .await?
            .context("the table vanished during update")?;
        // Report the drift that was repaired, not what is left (nothing).
        after.drift.clear();
        Ok(after)
    }

    /// The events of a payment system: an empty table goes with `down`, one
    /// with items only with `--delete-data`.
    async fn keep(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<String>> {
        if cx.stack.opts.delete_data {
            return Ok(None);
        }
        let name = cx.stack.table_name();
        // One item is enough to know; `Limit` bounds the read on a big table.
        let answer = cx
            .aws
            .dynamodb
            .scan()
            .table_name(&name)
            .limit(1)
            .select(Select::Count)
            .send()
            .await;
        let Some(page) = found(answer, &["ResourceNotFoundException"], "dynamodb:Scan")? else {
            return Ok(None);
        };
        Ok((page.count() > 0 || page.last_evaluated_key().is_some())
            .then(|| format!("table {name} holds events")))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let db = &cx.aws.dynamodb;
        let name = cx.stack.table_name();
        // Deletion protection guards the table against everything but this
        // run, which has established that it is empty or was told to
        // delete its data.
        let table = found(
            db.describe_table().table_name(&name).send().await,
            &["ResourceNotFoundException"],
            "dynamodb:DescribeTable",
        )?;
        let Some(table) = table else {
            return Ok(false);
        };
        if table
            .table()
            .and_then(|t| t.deletion_protection_enabled())
            .unwrap_or(false)
        {
            if table.table().and_then(|t| t.table_status()) != Some(&TableStatus::Active) {
                wait_active(cx, "waiting for the table to become ACTIVE").await?;
            }
            db.update_table()
                .table_name(&name)
                .deletion_protection_enabled(false)
                .send()
                .await
                .context("dynamodb:UpdateTable (deletion protection off) failed")?;
            wait_active(cx, "waiting for deletion protection to be turned off").await?;
        }
        // The receiver may still be live (the functions do not wait for the
        // table): an event that came in after `keep` looked keeps the table,
        // protected again.
        if let Some(why) = self.keep(cx, None).await? {
            db.update_table()
                .table_name(&name)
                .deletion_protection_enabled(true)
                .send()
                .await
                .context("dynamodb:UpdateTable (deletion protection on) failed")?;
            bail!("{why} (it received them while down ran); it is kept: run down again, with --delete-data to delete them");
        }
        let mut waited_for_active = false;
        loop {
            match db.delete_table().table_name(&name).send().await {
                Ok(_) => break,
                Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(false),
                // Still being created or updated (a run interrupted while it
                // waited): wait until it is ACTIVE, then delete it. (AWS
                // answers a table already DELETING without an error.)
                Err(e) if is_code(&e, &["ResourceInUseException"]) => {
                    let status = match db.describe_table().table_name(&name).send().await {
                        Ok(d) => d.table().and_then(|t| t.table_status().cloned()),
                        Err(e) if is_code(&e, &["ResourceNotFoundException"]) => return Ok(false),
                        Err(e) => return Err(e).context("dynamodb:DescribeTable failed"),
                    };
                    if status == Some(TableStatus::Deleting) {
                        break;
                    }
                    if waited_for_active {
                        return Err(e).context("dynamodb:DeleteTable failed");
                    }
                    wait_active(
                        cx,
                        "waiting for the table to become ACTIVE before deleting it",
                    )
                    .await?;
                    waited_for_active = true;
                }
                Err(e) => return Err(e).context("dynamodb:DeleteTable failed"),
            }
        }
        cx.say("waiting for the table to be deleted");
        let wait = db
            .wait_until_table_not_exists()
            .table_name(&name)
            .wait(Duration::from_secs(600));
        cx.unless_stopped("waiting for the table to be deleted", wait)
            .await?
            .context("the table was not deleted within 10 minutes")?;
        Ok(true)
    }
}

/// Waits (up to 10 minutes, or until the run is interrupted) for the table
/// to be ACTIVE; `what` is the progress line and the interrupted wait's name.
async fn wait_active(cx: &Cx, what: &str) -> Result<()> {
    cx.say(what);
    let wait = cx
        .aws
        .dynamodb
        .wait_until_table_exists()
        .table_name(cx.stack.table_name())
        .wait(Duration::from_secs(600));
    cx.unless_stopped(what, wait)
        .await?
        .context("the table did not become ACTIVE within 10 minutes")?;
    Ok(())
}

impl EventsTable {
    /// The read, with `recorded` true when the table is known or expected
    /// to exist: its details are then read in the same round as the check.
    async fn read_as(&self, cx: &Cx, recorded: bool) -> Result<Option<Live>> {
        let db = &cx.aws.dynamodb;
        let name = cx.stack.table_name();
        let arn = cx.stack.table_arn();
        let table = async {
            let answer = db.describe_table().table_name(&name).send().await;
            found(
                answer,
                &["ResourceNotFoundException"],
                "dynamodb:DescribeTable",
            )
        };
        let details = futures::future::join3(
            db.describe_continuous_backups().table_name(&name).send(),
            db.describe_time_to_live().table_name(&name).send(),
            db.list_tags_of_resource().resource_arn(&arn).send(),
        );
        let Some((table, (backups, ttl, tags))) = read_details(recorded, table, details).await?
        else {
            return Ok(None);
        };
        let t = table
            .table()
            .context("dynamodb:DescribeTable returned no table")?;
        let key: Vec<(String, String)> = t
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                )
            })
            .collect();
        if key != [(KEY.to_string(), "HASH".to_string())] {
            bail!(
                "table {name} exists with key schema {key:?} but the stack needs partition key {KEY} only; a key cannot be changed in place: migrate or delete the table, then run up again"
            );
        }
        let stream = t.stream_specification();
        let stream_arn = t.latest_stream_arn();
        let mut l = live(&name, t.table_arn().unwrap_or(&arn), stream_arn);
        let d = &mut l.drift;
        let billing = t
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str().to_string())
            .unwrap_or_else(|| "PROVISIONED".into());
        check(d, "billing_mode", &"PAY_PER_REQUEST".to_string(), &billing);
        check(
            d,
            "deletion_protection",
            &true,
            &t.deletion_protection_enabled().unwrap_or(false),
        );
        let sse = t
            .sse_description()
            .and_then(|s| s.status())
            .is_some_and(|s| *s == SseStatus::Enabled);
        check(d, "sse", &true, &sse);
        let stream_view = stream
            .filter(|s| s.stream_enabled())
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_string());
        check(
            d,
            "stream",
            &Some("NEW_AND_OLD_IMAGES".to_string()),
            &stream_view,
        );
        let pitr = backups
            .context("dynamodb:DescribeContinuousBackups failed")?
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            .map(|s| s.as_str() == "ENABLED")
            .unwrap_or(false);
        check(d, "point_in_time_recovery", &true, &pitr);
        let ttl = ttl.context("dynamodb:DescribeTimeToLive failed")?;
        let ttl = ttl.time_to_live_description();
        let ttl_on = ttl
            .filter(|t| {
                matches!(
                    t.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
            })
            .and_then(|t| t.attribute_name())
            .map(str::to_string);
        check(
            d,
            "ttl_attribute",
            &Some(TTL_ATTRIBUTE.to_string()),
            &ttl_on,
        );
        let have_tags: BTreeMap<String, String> = tags
            .context("dynamodb:ListTagsOfResource failed")?
            .tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect();
        d.extend(tags_drift(&self.tags(cx), &have_tags));
        l.owner = owner_of(&have_tags);
        Ok(Some(l))
    }

    async fn enable_pitr(&self, cx: &Cx) -> Result<()> {
        let db = &cx.aws.dynamodb;
        let name = cx.stack.table_name();
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()?;
        // Right after CreateTable, backups may not be available yet.
        retry_while(
            cx,
            &["ContinuousBackupsUnavailableException"],
            Duration::from_secs(300),
            "continuous backups to become available",
            || {
                db.update_continuous_backups()
                    .table_name(&name)
                    .point_in_time_recovery_specification(spec.clone())
                    .send()
            },
        )
        .await
        .context("dynamodb:UpdateContinuousBackups failed")?;
        Ok(())
    }

    async fn enable_ttl(&self, cx: &Cx) -> Result<()> {
        cx.aws
            .dynamodb
            .update_time_to_live()
            .table_name(cx.stack.table_name())
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()?,
            )
            .send()
            .await
            .context("dynamodb:UpdateTimeToLive failed")?;
        Ok(())
    }
}
