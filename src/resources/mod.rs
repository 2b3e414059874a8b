//! One module per AWS resource kind.

pub mod alarm;
pub mod api_deployment;
pub mod bucket_notification;
pub mod dynamodb_table;
pub mod event_source_mapping;
pub mod iam_role;
pub mod lambda_function;
pub mod lambda_permission;
pub mod log_group;
pub mod rest_api;
pub mod s3_bucket;
pub mod sns_topic;
pub mod usage_plan;
pub mod vpc;

use crate::engine::context::Cx;
use crate::engine::resource::Owner;
use anyhow::Context as _;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// True when the error's code is one of `codes`.
pub fn is_code<E: ProvideErrorMetadata>(e: &E, codes: &[&str]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

/// A read's answer, or `None` when its error code says the object is not
/// there (one of `missing`); other errors name the call that failed.
pub fn found<T, E>(answer: Result<T, E>, missing: &[&str], call: &str) -> anyhow::Result<Option<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match answer {
        Ok(t) => Ok(Some(t)),
        Err(e) if is_code(&e, missing) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{call} failed")),
    }
}

/// An object's existence check (`Ok(None)`: not there) and the reads of its
/// details. When the state file records the object, it most likely exists:
/// both go in one round. Otherwise the details wait for the check, so a
/// fresh `up` spends no calls on objects that are not there.
pub async fn read_details<A, B>(
    recorded: bool,
    check: impl Future<Output = anyhow::Result<Option<A>>>,
    details: impl Future<Output = B>,
) -> anyhow::Result<Option<(A, B)>> {
    if recorded {
        let (found, details) = tokio::join!(check, details);
        Ok(found?.map(|a| (a, details)))
    } else {
        match check.await? {
            Some(a) => Ok(Some((a, details.await))),
            None => Ok(None),
        }
    }
}

/// Retries `op` while it fails with one of `codes` (an AWS consistency delay
/// the SDK's own retry does not know about), for at most `limit`, showing
/// `waiting_for` on the resource's progress line.
pub async fn retry_while<T, E, F, Fut>(
    cx: &Cx,
    codes: &[&str],
    limit: Duration,
    waiting_for: &str,
    op: F,
) -> Result<T, E>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = Backoff {
        limit,
        first: Duration::from_millis(500),
        max: Duration::from_secs(10),
    };
    retry_when(cx, |e: &E| is_code(e, codes), backoff, waiting_for, op).await
}

/// How long a call is retried while a new role or policy propagates in IAM.
const IAM_PROPAGATION_LIMIT: Duration = Duration::from_secs(120);

/// Retries a call that fails while a new or changed execution role has not
/// propagated through IAM yet (seconds, sometimes longer).
pub async fn retry_iam_propagation<T, E, F, Fut>(cx: &Cx, op: F) -> Result<T, E>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = Backoff {
        limit: IAM_PROPAGATION_LIMIT,
        first: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    let waiting_for = "the execution role to propagate in IAM";
    retry_when(cx, is_iam_propagation, backoff, waiting_for, op).await
}

/// How long to keep retrying and how the pause between attempts grows.
struct Backoff {
    limit: Duration,
    first: Duration,
    max: Duration,
}

/// The retry loop behind `retry_while` and `retry_iam_propagation`: retries
/// `op` while `transient` says its error will pass, doubling the pause.
async fn retry_when<T, E, F, Fut>(
    cx: &Cx,
    transient: impl Fn(&E) -> bool,
    backoff: Backoff,
    waiting_for: &str,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut delay = backoff.first;
    loop {
        match op().await {
            Err(e) if transient(&e) && start.elapsed() + delay < backoff.limit => {
                cx.say(format!(
                    "waiting for {waiting_for} ({}s so far, up to {}s)",
                    start.elapsed().as_secs(),
                    backoff.limit.as_secs()
                ));
                // Interrupted: the error stands, the next run retries.
                if cx.pause(delay, waiting_for).await.is_err() {
                    return Err(e);
                }
                delay = (delay * 2).min(backoff.max);
            }
            other => return other,
        }
    }
}

fn is_iam_propagation<E: ProvideErrorMetadata>(e: &E) -> bool {
    is_code(e, &["InvalidParameterValueException"])
        && e.message().is_some_and(|m| {
            m.contains("cannot be assumed by Lambda")
                || m.contains("execution role does not have permissions")
                // CreateEventSourceMapping before the stream-read policy propagated.
                || m.contains("Please ensure the role can perform")
        })
}

/// Whose an object is, by its stack tag (and, on objects whose names are
/// global to the account, its region tag).
pub fn owner_of(have: &BTreeMap<String, String>) -> Owner {
    match (
        have.get(crate::stack::TAG_STACK),
        have.get(crate::stack::TAG_REGION),
    ) {
        (None, _) => Owner::Untagged,
        (Some(s), None) => Owner::Stack(s.clone()),
        (Some(s), Some(r)) => Owner::Stack(format!("{s}@{r}")),
    }
}

/// Compares tags: a key we set that is missing or has another value.
/// Keys someone else added are not drift, ours included: `up` never
/// removes a tag, so reporting one it would not remove would leave
/// `status` reporting drift after every `up`.
pub fn tags_drift(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Option<crate::engine::resource::Drift> {
    let set: BTreeMap<String, String> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if set.is_empty() {
        return None;
    }
    let fmt = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let have_sub: BTreeMap<String, String> = have
        .iter()
        .filter(|(k, _)| set.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(crate::engine::resource::Drift::new(
        "tags",
        fmt(&set),
        fmt(&have_sub),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_tags_up_would_set_are_drift() {
        let want = tags(&[("webhook-deploy:stack", "dev"), ("Name", "x")]);
        // Added by someone else, in our namespace or not: left alone.
        let extra = tags(&[
            ("webhook-deploy:stack", "dev"),
            ("Name", "x"),
            ("webhook-deploy:old", "1"),
            ("team", "payments"),
        ]);
        assert!(tags_drift(&want, &extra).is_none());
        let changed = tags(&[("webhook-deploy:stack", "prod"), ("team", "payments")]);
        let d = tags_drift(&want, &changed).expect("drift");
        assert_eq!(d.field, "tags");
        assert_eq!(d.want, "Name=x,webhook-deploy:stack=dev");
        assert_eq!(d.have, "webhook-deploy:stack=prod");
    }
}
