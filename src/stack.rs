//! The stack: names, tags, and the resources wired together. Reads top to
//! bottom like the Pulumi program it replaces.

use crate::engine::resource::Resource;
use crate::layout;
use crate::resources::{
    dynamodb_table::EventsTable, iam_role::FunctionRole, log_group::LogGroup,
    s3_bucket::ArchiveBucket,
};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Who the stack is and where it lives.
#[derive(Clone, Debug)]
pub struct Settings {
    pub suffix: String,
    pub region: String,
    pub account: String,
    pub opts: StackOptions,
}

/// Choices the operator makes on the command line that shape the stack.
/// New options get a field here and a default in `Default`.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {}

/// The three Lambda functions of the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Receiver,
    Processor,
    DeadLetter,
}

impl Function {
    pub const ALL: [Function; 3] = [
        Function::Receiver,
        Function::Processor,
        Function::DeadLetter,
    ];

    pub fn base_name(self) -> &'static str {
        match self {
            Function::Receiver => "webhook-receiver",
            Function::Processor => "event-processor",
            Function::DeadLetter => "dead-letter-handler",
        }
    }

    /// Short logical-id stem: `receiver`, `processor`, `dead-letter`.
    pub fn key(self) -> &'static str {
        match self {
            Function::Receiver => "receiver",
            Function::Processor => "processor",
            Function::DeadLetter => "dead-letter",
        }
    }
}

/// `--suffix`: lowercase letter first, then `[a-z0-9-]`, at most 16, no trailing `-`.
pub fn validate_suffix(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 16
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-');
    if !ok {
        bail!(
            "invalid --suffix {s:?}: use 1-16 characters, a lowercase letter first, then lowercase letters, digits or '-', not ending in '-' (e.g. dev, prod-eu1)"
        );
    }
    Ok(())
}

pub const TAG_STACK: &str = "webhook-deploy:stack";
pub const TAG_RESOURCE: &str = "webhook-deploy:resource";

impl Settings {
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.suffix)
    }

    pub fn table_name(&self) -> String {
        self.name("webhook-events")
    }

    /// Bucket names are global: account and region make it unique.
    pub fn bucket_name(&self) -> String {
        format!(
            "webhook-archive-{}-{}-{}",
            self.suffix, self.account, self.region
        )
    }

    pub fn function_name(&self, f: Function) -> String {
        self.name(f.base_name())
    }

    /// Where Lambda writes the function's logs (the seed's log groups had
    /// other names, so their retention never applied).
    pub fn log_group_name(&self, f: Function) -> String {
        format!("/aws/lambda/{}", self.function_name(f))
    }

    pub fn role_name(&self, f: Function) -> String {
        self.name(&format!("{}-role", f.base_name()))
    }

    pub fn table_arn(&self) -> String {
        format!(
            "arn:aws:dynamodb:{}:{}:table/{}",
            self.region,
            self.account,
            self.table_name()
        )
    }

    pub fn bucket_arn(&self) -> String {
        format!("arn:aws:s3:::{}", self.bucket_name())
    }

    pub fn log_group_arn(&self, f: Function) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{}",
            self.region,
            self.account,
            self.log_group_name(f)
        )
    }

    /// Every taggable resource carries these.
    pub fn tags(&self, logical_id: &str, name: &str) -> BTreeMap<String, String> {
        [
            (TAG_STACK, self.suffix.as_str()),
            (TAG_RESOURCE, logical_id),
            ("Environment", self.suffix.as_str()),
            ("Project", "webhook-processing"),
            ("ManagedBy", "webhook-deploy"),
            ("Name", name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Logical ids (keys in the state file).
pub mod ids {
    pub const TABLE: &str = "events-table";
    pub const BUCKET: &str = "archive-bucket";
    pub fn log_group(f: super::Function) -> String {
        format!("{}-logs", f.key())
    }
    pub fn role(f: super::Function) -> String {
        format!("{}-role", f.key())
    }
    /// Attributes: `name`, `arn`.
    pub fn function(f: super::Function) -> String {
        format!("{}-function", f.key())
    }
}

/// The whole stack, in dependency order.
pub fn define(s: &Settings) -> Vec<Arc<dyn Resource>> {
    let mut stack: Vec<Arc<dyn Resource>> = Vec::new();

    // Data: events keyed by eventId alone, so a redelivery is a duplicate.
    stack.push(Arc::new(EventsTable::new(ids::TABLE)));
    stack.push(Arc::new(ArchiveBucket::new(ids::BUCKET)));

    // Logs where Lambda actually writes them, 7 days.
    for f in Function::ALL {
        stack.push(Arc::new(LogGroup::new(
            &ids::log_group(f),
            s.log_group_name(f),
            7,
        )));
    }

    // Identity: one role per function, every statement scoped to its ARN.
    for f in Function::ALL {
        stack.push(Arc::new(FunctionRole::new(&ids::role(f), f)));
    }

    stack
}

/// The least-privilege inline policy of one function's role.
pub fn role_policy(s: &Settings, f: Function, stream_arn: &str) -> serde_json::Value {
    use serde_json::json;
    let table = s.table_arn();
    let bucket = s.bucket_arn();
    let mut statements = vec![json!({
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": format!("{}:*", s.log_group_arn(f)),
    })];
    match f {
        Function::Receiver => statements.push(json!({
            "Sid": "StoreEvents",
            "Effect": "Allow",
            "Action": ["dynamodb:PutItem"],
            "Resource": table,
        })),
        Function::Processor => {
            statements.push(json!({
                "Sid": "MarkProcessed",
                "Effect": "Allow",
                "Action": ["dynamodb:UpdateItem"],
                "Resource": table,
            }));
            statements.push(json!({
                "Sid": "ReadStream",
                "Effect": "Allow",
                "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
                "Resource": stream_arn,
            }));
            statements.push(json!({
                "Sid": "ListStreams",
                "Effect": "Allow",
                "Action": ["dynamodb:ListStreams"],
                "Resource": format!("{table}/stream/*"),
            }));
            // The mapping's on-failure destination writes with this role:
            // PutObject under its prefix plus ListBucket (Lambda guide).
            statements.push(json!({
                "Sid": "ArchiveAndFailureRecords",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": [
                    format!("{bucket}/{}*", layout::EVENTS_PREFIX),
                    format!("{bucket}/{}*", layout::FAILURE_RECORD_PREFIX),
                ],
            }));
            statements.push(json!({
                "Sid": "FailureDestinationList",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": bucket,
            }));
        }
        Function::DeadLetter => {
            statements.push(json!({
                "Sid": "ReadFailureRecords",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": format!("{bucket}/{}*", layout::FAILURE_RECORD_PREFIX),
            }));
            statements.push(json!({
                "Sid": "WriteDeadLetters",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": format!("{bucket}/{}*", layout::DEAD_LETTER_PREFIX),
            }));
            statements.push(json!({
                "Sid": "MarkFailed",
                "Effect": "Allow",
                "Action": ["dynamodb:UpdateItem"],
                "Resource": table,
            }));
        }
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_rules() {
        for ok in ["dev", "a", "prod-eu1", "abcdefghijklmnop"] {
            assert!(validate_suffix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Dev",
            "1dev",
            "dev-",
            "dev_1",
            "abcdefghijklmnopq",
            "dév",
        ] {
            assert!(validate_suffix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policies_scope_every_statement_to_an_arn() {
        let s = Settings {
            suffix: "dev".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            opts: StackOptions::default(),
        };
        for f in Function::ALL {
            let p = role_policy(
                &s,
                f,
                "arn:aws:dynamodb:us-east-1:123456789012:table/webhook-events-dev/stream/X",
            );
            let text = p.to_string();
            assert!(
                !text.contains("\"*\""),
                "{f:?} has a wildcard resource: {text}"
            );
            assert!(!text.contains("arn:aws:logs:*"), "{text}");
        }
    }
}
