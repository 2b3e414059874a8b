//! CloudWatch metric alarms that notify the stack's SNS topic. Every alarm
//! is written as metric-data queries (one metric, or metric math), so one
//! shape is compared and applied for all of them.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Live, Record, Resource};
use crate::layout;
use crate::resources::{is_code, owner_of, tags_drift};
use crate::stack::{ids, Function, Settings, STAGE};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, Metric, MetricDataQuery, MetricStat, Tag,
};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Alarms look at 5-minute windows.
pub const PERIOD: i32 = 300;
/// Missing data (no invocations, no dead letters) is not an incident.
pub const TREAT_MISSING_DATA: &str = "notBreaching";

/// One metric-data query of an alarm: a metric statistic or an expression.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Query {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    pub return_data: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricRef {
    pub namespace: String,
    pub name: String,
    /// Sorted by name.
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
    pub period: i32,
}

/// Everything an alarm is made of except its tags and topic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub queries: Vec<Query>,
    /// `GreaterThanThreshold` and friends.
    pub comparison: String,
    pub threshold: f64,
    pub evaluation_periods: i32,
}

fn stat(
    id: &str,
    namespace: &str,
    name: &str,
    dimensions: &[(&str, &str)],
    statistic: &str,
    return_data: bool,
) -> Query {
    let mut dims: Vec<(String, String)> = dimensions
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    dims.sort();
    Query {
        id: id.into(),
        metric: Some(MetricRef {
            namespace: namespace.into(),
            name: name.into(),
            dimensions: dims,
            stat: statistic.into(),
            period: PERIOD,
        }),
        expression: None,
        return_data,
    }
}

/// Error RATE in percent over 5 minutes: `100 * Errors / Invocations > 1`
/// (the seed's "Sum of Errors > 1" counted errors). No invocations gives
/// no data point, which is not breaching.
pub fn error_rate(s: &Settings, f: Function) -> AlarmSpec {
    let function = s.function_name(f);
    let dims = [("FunctionName", function.as_str())];
    AlarmSpec {
        name: s.name(&format!("{}-error-rate", f.base_name())),
        description: format!("More than 1% of {function} invocations failed over 5 minutes."),
        queries: vec![
            stat("errors", "AWS/Lambda", "Errors", &dims, "Sum", false),
            stat(
                "invocations",
                "AWS/Lambda",
                "Invocations",
                &dims,
                "Sum",
                false,
            ),
            Query {
                id: "error_rate".into(),
                metric: None,
                expression: Some("100 * errors / invocations".into()),
                return_data: true,
            },
        ],
        comparison: "GreaterThanThreshold".into(),
        threshold: 1.0,
        evaluation_periods: 1,
    }
}

/// The processor is falling behind the table's stream: its oldest record
/// was more than 5 minutes old (records expire from the stream after 24 h).
pub fn iterator_age(s: &Settings) -> AlarmSpec {
    let function = s.function_name(Function::Processor);
    AlarmSpec {
        name: s.name("event-processor-iterator-age"),
        description: format!("{function} is more than 5 minutes behind the events table's stream."),
        queries: vec![stat(
            "iterator_age",
            "AWS/Lambda",
            "IteratorAge",
            &[("FunctionName", function.as_str())],
            "Maximum",
            true,
        )],
        comparison: "GreaterThanThreshold".into(),
        threshold: 300_000.0,
        evaluation_periods: 1,
    }
}

/// Any event written to dead-letters/ (the handler's embedded metric).
pub fn dead_letters(s: &Settings) -> AlarmSpec {
    let function = s.function_name(Function::DeadLetter);
    AlarmSpec {
        name: s.name("webhook-dead-letters"),
        description:
            "At least one webhook event failed processing and was written to dead-letters/.".into(),
        queries: vec![stat(
            "dead_letters",
            layout::METRIC_NAMESPACE,
            layout::DEAD_LETTER_METRIC,
            &[("FunctionName", function.as_str())],
            "Sum",
            true,
        )],
        comparison: "GreaterThanThreshold".into(),
        threshold: 0.0,
        evaluation_periods: 1,
    }
}

/// Any 5XX answered by the API (the receiver answers 500 only when it
/// could not store an event).
pub fn api_5xx(s: &Settings) -> AlarmSpec {
    let api = s.api_name();
    AlarmSpec {
        name: s.name("webhook-api-5xx"),
        description: format!("{api} answered 5XX errors (stage {STAGE})."),
        queries: vec![stat(
            "errors_5xx",
            "AWS/ApiGateway",
            "5XXError",
            &[("ApiName", api.as_str()), ("Stage", STAGE)],
            "Sum",
            true,
        )],
        comparison: "GreaterThanThreshold".into(),
        threshold: 0.0,
        evaluation_periods: 1,
    }
}

pub struct MetricAlarm {
    id: String,
    spec: AlarmSpec,
}

/// Every alarm of the stack (`stack::define_monitoring` makes one of each),
/// so one DescribeAlarms answers all their reads.
pub fn stack_alarm_names(s: &Settings) -> Vec<String> {
    let mut names: Vec<String> = Function::ALL
        .iter()
        .map(|f| error_rate(s, *f).name)
        .collect();
    names.extend([iterator_age(s).name, dead_letters(s).name, api_5xx(s).name]);
    names
}

impl MetricAlarm {
    pub fn new(id: &str, spec: AlarmSpec) -> Self {
        Self {
            id: id.into(),
            spec,
        }
    }

    fn arn(&self, cx: &Cx) -> String {
        cx.stack
            .own_arn("cloudwatch", &format!("alarm:{}", self.spec.name))
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &self.spec.name)
    }

    fn topic(cx: &Cx) -> Result<String> {
        Ok(cx.attr(ids::ALARM_TOPIC, "arn")?)
    }

    fn live(&self, arn: &str) -> Live {
        Live::new(&self.spec.name)
            .attr("name", &self.spec.name)
            .attr("arn", arn)
    }

    fn aws_tags(&self, cx: &Cx) -> Vec<Tag> {
        self.tags(cx)
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    fn aws_queries(&self) -> Vec<MetricDataQuery> {
        self.spec
            .queries
            .iter()
            .map(|q| {
                let stat = match &q.metric {
                    Some(m) => {
                        let dims = m
                            .dimensions
                            .iter()
                            .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                            .collect();
                        let metric = Metric::builder()
                            .namespace(&m.namespace)
                            .metric_name(&m.name)
                            .set_dimensions(Some(dims))
                            .build();
                        Some(
                            MetricStat::builder()
                                .metric(metric)
                                .period(m.period)
                                .stat(&m.stat)
                                .build(),
                        )
                    }
                    None => None,
                };
                MetricDataQuery::builder()
                    .id(&q.id)
                    .set_metric_stat(stat)
                    .set_expression(q.expression.clone())
                    .return_data(q.return_data)
                    .build()
            })
            .collect()
    }

    /// PutMetricAlarm creates or replaces the whole alarm definition.
    async fn put(&self, cx: &Cx, with_tags: bool) -> Result<()> {
        let s = &self.spec;
        let mut req = cx
            .aws
            .cloudwatch
            .put_metric_alarm()
            .alarm_name(&s.name)
            .alarm_description(&s.description)
            .set_metrics(Some(self.aws_queries()))
            .comparison_operator(ComparisonOperator::from(s.comparison.as_str()))
            .threshold(s.threshold)
            .evaluation_periods(s.evaluation_periods)
            .treat_missing_data(TREAT_MISSING_DATA)
            .actions_enabled(true)
            .alarm_actions(Self::topic(cx)?);
        // Tags given to PutMetricAlarm apply on creation only.
        if with_tags {
            req = req.set_tags(Some(self.aws_tags(cx)));
        }
        req.send()
            .await
            .context("cloudwatch:PutMetricAlarm failed")?;
        Ok(())
    }
}

/// The live queries in the same shape as [`Query`].
fn live_queries(qs: &[MetricDataQuery]) -> Vec<Query> {
    qs.iter()
        .map(|q| Query {
            id: q.id().unwrap_or_default().to_string(),
            metric: q.metric_stat().map(|ms| {
                let m = ms.metric();
                let mut dims: Vec<(String, String)> = m
                    .map(|m| m.dimensions())
                    .unwrap_or_default()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_string(),
                            d.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                dims.sort();
                MetricRef {
                    namespace: m
                        .and_then(|m| m.namespace())
                        .unwrap_or_default()
                        .to_string(),
                    name: m
                        .and_then(|m| m.metric_name())
                        .unwrap_or_default()
                        .to_string(),
                    dimensions: dims,
                    stat: ms.stat().unwrap_or_default().to_string(),
                    period: ms.period().unwrap_or_default(),
                }
            }),
            expression: q.expression().map(str::to_string),
            // Absent means true (the API's default).
            return_data: q.return_data().unwrap_or(true),
        })
        .collect()
}

#[async_trait]
impl Resource for MetricAlarm {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "cloudwatch-alarm"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![ids::ALARM_TOPIC.into()]
    }
    fn desired(&self, cx: &Cx) -> Result<serde_json::Value> {
        Ok(json!({
            "alarm": self.spec,
            "treat_missing_data": TREAT_MISSING_DATA,
            "alarm_actions": [Self::topic(cx)?],
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let cw = &cx.aws.cloudwatch;
        // The ARN is known from the name: when the state file says the
        // alarm exists, the alarm and its tags in one round (the tags again
        // only if the service names another ARN).
        let want_arn = self.arn(cx);
        let names = stack_alarm_names(&cx.stack);
        let describe = async {
            if names.contains(&self.spec.name) {
                cx.batched("cloudwatch:DescribeAlarms", || async {
                    cw.describe_alarms()
                        .set_alarm_names(Some(names.clone()))
                        .send()
                        .await
                        .context("cloudwatch:DescribeAlarms failed")
                })
                .await
            } else {
                cw.describe_alarms()
                    .alarm_names(&self.spec.name)
                    .send()
                    .await
                    .context("cloudwatch:DescribeAlarms failed")
                    .map(Arc::new)
            }
        };
        let (found, tags) = if rec.is_some() {
            let (found, tags) = tokio::join!(
                describe,
                cw.list_tags_for_resource().resource_arn(&want_arn).send()
            );
            (found, Some(tags))
        } else {
            (describe.await, None)
        };
        let found = found?;
        let Some(a) = found
            .metric_alarms()
            .iter()
            .find(|a| a.alarm_name() == Some(self.spec.name.as_str()))
        else {
            return Ok(None);
        };
        let arn = a
            .alarm_arn()
            .map(str::to_string)
            .unwrap_or_else(|| want_arn.clone());
        let tags = match tags {
            Some(tags) if arn == want_arn => tags,
            _ => cw.list_tags_for_resource().resource_arn(&arn).send().await,
        };
        let tags = match tags {
            Ok(t) => t
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            Err(e) if is_code(&e, &["ResourceNotFound", "ResourceNotFoundException"]) => {
                BTreeMap::new()
            }
            Err(e) => return Err(e).context("cloudwatch:ListTagsForResource failed"),
        };
        if rec.is_none() {
            let what = format!("{} {}", self.kind(), self.spec.name);
            crate::engine::claim_owner(cx, &what, &owner_of(&tags))?;
        }
        let s = &self.spec;
        let mut live = self.live(&arn);
        let d = &mut live.drift;
        check(d, "queries", &s.queries, &live_queries(a.metrics()));
        check(
            d,
            "comparison",
            &Some(s.comparison.as_str()),
            &a.comparison_operator().map(|c| c.as_str()),
        );
        check(d, "threshold", &Some(s.threshold), &a.threshold());
        check(
            d,
            "evaluation_periods",
            &Some(s.evaluation_periods),
            &a.evaluation_periods(),
        );
        check(
            d,
            "treat_missing_data",
            &Some(TREAT_MISSING_DATA),
            &a.treat_missing_data(),
        );
        check(
            d,
            "alarm_actions",
            &vec![Self::topic(cx)?],
            &a.alarm_actions().to_vec(),
        );
        check(d, "actions_enabled", &Some(true), &a.actions_enabled());
        check(
            d,
            "description",
            &Some(s.description.as_str()),
            &a.alarm_description(),
        );
        d.extend(tags_drift(&self.tags(cx), &tags));
        live.owner = owner_of(&tags);
        Ok(Some(live))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        self.put(cx, true).await?;
        Ok(self.live(&self.arn(cx)))
    }

    async fn update(&self, cx: &Cx, live: &Live) -> Result<Live> {
        if live.drift.iter().any(|d| d.field != "tags") {
            self.put(cx, false).await?;
        }
        let arn = live
            .attrs
            .get("arn")
            .cloned()
            .unwrap_or_else(|| self.arn(cx));
        if live.drift.iter().any(|d| d.field == "tags") {
            cx.aws
                .cloudwatch
                .tag_resource()
                .resource_arn(&arn)
                .set_tags(Some(self.aws_tags(cx)))
                .send()
                .await
                .context("cloudwatch:TagResource failed")?;
        }
        Ok(self.live(&arn))
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let cw = &cx.aws.cloudwatch;
        let found = cw
            .describe_alarms()
            .alarm_names(&self.spec.name)
            .send()
            .await
            .context("cloudwatch:DescribeAlarms failed")?;
        if found.metric_alarms().is_empty() {
            return Ok(false);
        }
        // DeleteAlarms succeeds for names that do not exist, hence the read.
        cw.delete_alarms()
            .alarm_names(&self.spec.name)
            .send()
            .await
            .context("cloudwatch:DeleteAlarms failed")?;
        Ok(true)
    }
}
