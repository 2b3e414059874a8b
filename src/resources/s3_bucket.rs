//! The S3 archive bucket: versioning, SSE-S3 with bucket key, lifecycle,
//! all four public-access blocks, and a policy denying non-TLS access.

use crate::engine::context::Cx;
use crate::engine::resource::{check, Drift, Live, Record, Resource};
use crate::resources::{is_code, owner_of, read_details, tags_drift};
use anyhow::{Context, Result};
use async_trait::async_trait;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, Delete, ExpirationStatus, LifecycleRule,
    LifecycleRuleFilter, NoncurrentVersionExpiration, ObjectIdentifier,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, Transition,
    TransitionStorageClass, VersioningConfiguration,
};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const LIFECYCLE_RULE_ID: &str = "webhook-archive";
pub const GLACIER_AFTER_DAYS: i32 = 30;
pub const NONCURRENT_EXPIRE_DAYS: i32 = 90;
pub const ABORT_MULTIPART_DAYS: i32 = 7;

pub struct ArchiveBucket {
    id: String,
}

/// One lifecycle rule in a comparable form. The bucket's whole
/// configuration is compared, not only our rule: another rule (or an
/// expiration added to ours) could delete the archive.
#[derive(Debug, PartialEq, Serialize)]
struct Lifecycle {
    id: String,
    enabled: bool,
    /// The objects it applies to: a prefix ("" is the whole bucket), or
    /// another kind of filter (tags, sizes) by its debug form.
    filter: String,
    glacier_after_days: Option<i32>,
    /// Transitions other than ours, as "<class> after <days> days".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_transitions: Vec<String>,
    /// Expiry of current versions (ours has none: the archive is kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<String>,
    noncurrent_expire_days: Option<i32>,
    abort_multipart_days: Option<i32>,
}

impl Lifecycle {
    fn desired() -> Vec<Self> {
        vec![Self {
            id: LIFECYCLE_RULE_ID.into(),
            enabled: true,
            filter: String::new(),
            glacier_after_days: Some(GLACIER_AFTER_DAYS),
            other_transitions: vec![],
            expiration: None,
            noncurrent_expire_days: Some(NONCURRENT_EXPIRE_DAYS),
            abort_multipart_days: Some(ABORT_MULTIPART_DAYS),
        }]
    }

    fn from_rule(r: &LifecycleRule) -> Self {
        #[allow(deprecated)] // a rule's top-level Prefix, from older clients
        let filter = match r.filter() {
            Some(f)
                if f.tag().is_none()
                    && f.and().is_none()
                    && f.object_size_greater_than().is_none()
                    && f.object_size_less_than().is_none() =>
            {
                f.prefix().unwrap_or_default().to_string()
            }
            Some(f) => format!("{f:?}"),
            None => r.prefix().unwrap_or_default().to_string(),
        };
        let glacier = |t: &&Transition| t.storage_class() == Some(&TransitionStorageClass::Glacier);
        Self {
            id: r.id().unwrap_or_default().to_string(),
            enabled: *r.status() == ExpirationStatus::Enabled,
            filter,
            glacier_after_days: r.transitions().iter().find(glacier).and_then(|t| t.days()),
            other_transitions: r
                .transitions()
                .iter()
                .filter(|t| !glacier(t))
                .map(|t| {
                    format!(
                        "{} after {} days",
                        t.storage_class().map(|c| c.as_str()).unwrap_or("?"),
                        t.days().unwrap_or_default()
                    )
                })
                .collect(),
            expiration: r.expiration().map(|e| format!("{e:?}")),
            noncurrent_expire_days: r
                .noncurrent_version_expiration()
                .and_then(|n| n.noncurrent_days()),
            abort_multipart_days: r
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
        }
    }
}

impl ArchiveBucket {
    pub fn new(id: &str) -> Self {
        Self { id: id.into() }
    }

    fn tags(&self, cx: &Cx) -> BTreeMap<String, String> {
        cx.stack.tags(&self.id, &cx.stack.bucket_name())
    }

    /// The wanted bucket policy; `Null` (none) when the stack is run
    /// without it (`local` on a plain-HTTP emulator).
    fn tls_policy(cx: &Cx) -> Value {
        if !cx.stack.opts.deny_insecure_transport {
            return Value::Null;
        }
        let arn = cx.stack.bucket_arn();
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn.clone(), format!("{arn}/*")],
                "Condition": { "Bool": { "aws:SecureTransport": "false" } },
            }],
        })
    }

    fn live(cx: &Cx) -> Live {
        let name = cx.stack.bucket_name();
        Live::new(&name)
            .attr("name", &name)
            .attr("arn", cx.stack.bucket_arn())
    }
}

#[async_trait]
impl Resource for ArchiveBucket {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &'static str {
        "s3-bucket"
    }
    fn depends_on(&self) -> Vec<String> {
        vec![]
    }
    fn desired(&self, cx: &Cx) -> Result<Value> {
        Ok(json!({
            "name": cx.stack.bucket_name(),
            "versioning": "Enabled",
            "encryption": { "algorithm": "AES256", "bucket_key": true },
            "lifecycle": Lifecycle::desired(),
            "public_access_block": [true, true, true, true],
            "policy": Self::tls_policy(cx),
            "tags": self.tags(cx),
        }))
    }

    async fn read(&self, cx: &Cx, rec: Option<&Record>) -> Result<Option<Live>> {
        let s3 = &cx.aws.s3;
        let b = cx.stack.bucket_name();
        let head = async {
            match s3.head_bucket().bucket(&b).send().await {
                Ok(_) => Ok(Some(())),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
                Err(e) => Err(e).context("s3:HeadBucket failed"),
            }
        };
        let settings = futures::future::join(
            futures::future::join3(
                s3.get_bucket_versioning().bucket(&b).send(),
                s3.get_bucket_encryption().bucket(&b).send(),
                s3.get_bucket_lifecycle_configuration().bucket(&b).send(),
            ),
            futures::future::join3(
                s3.get_public_access_block().bucket(&b).send(),
                s3.get_bucket_policy().bucket(&b).send(),
                s3.get_bucket_tagging().bucket(&b).send(),
            ),
        );
        let Some(((), ((ver, enc, lc), (pab, pol, tags)))) =
            read_details(rec.is_some(), head, settings).await?
        else {
            return Ok(None);
        };
        let mut l = Self::live(cx);
        let d = &mut l.drift;

        let versioning = match ver {
            Ok(o) => o.status().map(|s| s.as_str().to_string()),
            Err(e) => match lenient_versioning_status(&e) {
                Some(status) => status,
                None => return Err(e).context("s3:GetBucketVersioning failed"),
            },
        };
        check(d, "versioning", &Some("Enabled".to_string()), &versioning);

        let encryption = match enc {
            Ok(o) => o
                .server_side_encryption_configuration()
                .and_then(|c| c.rules().first())
                .map(|r| {
                    let alg = r
                        .apply_server_side_encryption_by_default()
                        .map(|a| a.sse_algorithm().as_str().to_string())
                        .unwrap_or_default();
                    (alg, r.bucket_key_enabled().unwrap_or(false))
                }),
            Err(e) if is_code(&e, &["ServerSideEncryptionConfigurationNotFoundError"]) => None,
            Err(e) => return Err(e).context("s3:GetBucketEncryption failed"),
        };
        check(
            d,
            "encryption",
            &Some(("AES256".to_string(), true)),
            &encryption,
        );

        let lifecycle: Vec<Lifecycle> = match lc {
            Ok(o) => o.rules().iter().map(Lifecycle::from_rule).collect(),
            Err(e) if is_code(&e, &["NoSuchLifecycleConfiguration"]) => vec![],
            Err(e) => return Err(e).context("s3:GetBucketLifecycleConfiguration failed"),
        };
        check(d, "lifecycle", &Lifecycle::desired(), &lifecycle);

        let blocks = match pab {
            Ok(o) => o
                .public_access_block_configuration()
                .map(|c| {
                    [
                        c.block_public_acls(),
                        c.ignore_public_acls(),
                        c.block_public_policy(),
                        c.restrict_public_buckets(),
                    ]
                    .map(|v| v.unwrap_or(false))
                })
                .unwrap_or_default(),
            Err(e) if is_code(&e, &["NoSuchPublicAccessBlockConfiguration"]) => [false; 4],
            Err(e) => return Err(e).context("s3:GetPublicAccessBlock failed"),
        };
        check(d, "public_access_block", &[true; 4], &blocks);

        let policy = match pol {
            Ok(o) => o
                .policy()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
                .unwrap_or(Value::Null),
            Err(e) if is_code(&e, &["NoSuchBucketPolicy"]) => Value::Null,
            Err(e) => return Err(e).context("s3:GetBucketPolicy failed"),
        };
        let want_policy = Self::tls_policy(cx);
        if policy != want_policy {
            d.push(Drift::new("policy", &want_policy, &policy));
        }

        let have_tags: BTreeMap<String, String> = match tags {
            Ok(o) => o
                .tag_set()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect(),
            Err(e) if is_code(&e, &["NoSuchTagSet"]) => BTreeMap::new(),
            Err(e) => return Err(e).context("s3:GetBucketTagging failed"),
        };
        d.extend(tags_drift(&self.tags(cx), &have_tags));
        l.owner = owner_of(&have_tags);
        Ok(Some(l))
    }

    async fn create(&self, cx: &Cx) -> Result<Live> {
        let s3 = &cx.aws.s3;
        let b = cx.stack.bucket_name();
        let mut req = s3.create_bucket().bucket(&b);
        // us-east-1 rejects an explicit location constraint.
        if cx.stack.region != "us-east-1" {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(cx.stack.region.as_str()))
                    .build(),
            );
        }
        // us-east-1 answers a create of a bucket the account already owns
        // with success, elsewhere with this code.
        let adopted = match req.send().await {
            Ok(_) => false,
            Err(e) if is_code(&e, &["BucketAlreadyOwnedByYou"]) => true,
            Err(e) if is_code(&e, &["BucketAlreadyExists"]) => {
                anyhow::bail!(
                    "bucket name {b} is taken by another AWS account; bucket names are global"
                )
            }
            Err(e) => return Err(e).context("s3:CreateBucket failed"),
        };
        cx.say("configuring versioning, encryption, lifecycle, access");
        tokio::try_join!(
            self.put_versioning(cx),
            self.put_encryption(cx),
            self.put_lifecycle(cx),
            self.put_public_access_block(cx),
            self.put_tags(cx),
        )?;
        // After the public-access block, so the bucket is never open.
        if cx.stack.opts.deny_insecure_transport {
            self.put_policy(cx).await?;
        }
        let live = Self::live(cx);
        Ok(if adopted { live.adopted() } else { live })
    }

    async fn update(&self, cx: &Cx, l: &Live) -> Result<Live> {
        for Drift { field, .. } in &l.drift {
            match field.as_str() {
                "versioning" => self.put_versioning(cx).await?,
                "encryption" => self.put_encryption(cx).await?,
                "lifecycle" => self.put_lifecycle(cx).await?,
                "public_access_block" => self.put_public_access_block(cx).await?,
                "policy" => self.put_policy(cx).await?,
                "tags" => self.put_tags(cx).await?,
                _ => {}
            }
        }
        Ok(Self::live(cx))
    }

    /// The archive: an empty bucket goes with `down`, one with objects (any
    /// version) only with `--delete-data`.
    async fn keep(&self, cx: &Cx, _rec: Option<&Record>) -> Result<Option<String>> {
        if cx.stack.opts.delete_data {
            return Ok(None);
        }
        let b = cx.stack.bucket_name();
        // Delete markers alone are no data; the first version is. (The SDK
        // has no paginator for ListObjectVersions: it pages by two markers.)
        let (mut key, mut version) = (None, None);
        loop {
            let page = cx
                .aws
                .s3
                .list_object_versions()
                .bucket(&b)
                .set_key_marker(key)
                .set_version_id_marker(version)
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) if is_code(&e, &["NoSuchBucket"]) => return Ok(None),
                Err(e) => return Err(e).context("s3:ListObjectVersions failed"),
            };
            if !page.versions().is_empty() {
                return Ok(Some(format!("bucket {b} holds objects")));
            }
            if page.is_truncated() != Some(true) {
                return Ok(None);
            }
            key = page.next_key_marker().map(str::to_string);
            version = page.next_version_id_marker().map(str::to_string);
        }
    }

    async fn delete(&self, cx: &Cx, _rec: Option<&Record>) -> Result<bool> {
        let s3 = &cx.aws.s3;
        let b = cx.stack.bucket_name();
        match s3.head_bucket().bucket(&b).send().await {
            Ok(_) => {}
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(false)
            }
            Err(e) => return Err(e).context("s3:HeadBucket failed"),
        }
        // The deny-non-TLS policy would block emptying through a plain-HTTP
        // endpoint (an emulator); the bucket is going away, so drop it first.
        match s3.delete_bucket_policy().bucket(&b).send().await {
            Ok(_) => {}
            Err(e) if is_code(&e, &["NoSuchBucketPolicy", "NoSuchBucket"]) => {}
            Err(e) => return Err(e).context("s3:DeleteBucketPolicy failed"),
        }
        let removed = self.empty(cx, cx.stack.opts.delete_data).await?;
        if removed > 0 {
            cx.say(format!(
                "emptied {removed} object versions and delete markers"
            ));
        }
        match s3.delete_bucket().bucket(&b).send().await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, &["NoSuchBucket"]) => Ok(false),
            Err(e) => Err(e).context("s3:DeleteBucket failed"),
        }
    }
}

/// Some S3 implementations (moto 5.2) answer GetBucketVersioning with a
/// `<GetBucketVersioningResponse>` root, which the SDK's strict parser
/// rejects although the `<Status>` inside is well formed. Read it from the
/// raw body in that case; `None` when the body is not such a document.
fn lenient_versioning_status(
    e: &aws_sdk_s3::error::SdkError<
        aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
) -> Option<Option<String>> {
    let raw = e.raw_response()?;
    if !raw.status().is_success() {
        return None;
    }
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if !body.contains("<GetBucketVersioningResponse") {
        return None;
    }
    let status = body
        .split_once("<Status>")
        .and_then(|(_, rest)| rest.split_once("</Status>"))
        .map(|(s, _)| s.to_string());
    Some(status)
}

impl ArchiveBucket {
    /// Deletes every delete marker and, with `data`, every object version,
    /// 1000 per call. Without `data` an object version stops it: one arrived
    /// after `keep` found none, and it is not this run's to delete (the
    /// policy that `delete` lifted is put back).
    async fn empty(&self, cx: &Cx, data: bool) -> Result<usize> {
        let s3 = &cx.aws.s3;
        let b = cx.stack.bucket_name();
        let mut removed = 0;
        loop {
            let page = s3
                .list_object_versions()
                .bucket(&b)
                .max_keys(1000)
                .send()
                .await
                .context("s3:ListObjectVersions failed")?;
            if !data && !page.versions().is_empty() {
                // Kept as it was: with its deny-non-TLS policy back.
                self.put_policy(cx).await?;
                anyhow::bail!(
                    "bucket {b} received objects while down ran; it is kept: run down again, with --delete-data to delete them"
                );
            }
            let ids: Vec<ObjectIdentifier> = page
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    page.delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                )
                .filter_map(|(k, v)| {
                    ObjectIdentifier::builder()
                        .key(k?)
                        .set_version_id(v.map(str::to_string))
                        .build()
                        .ok()
                })
                .collect();
            if ids.is_empty() {
                return Ok(removed);
            }
            cx.say(format!("emptying the bucket ({removed} removed so far)"));
            let n = ids.len();
            let out = s3
                .delete_objects()
                .bucket(&b)
                .delete(
                    Delete::builder()
                        .set_objects(Some(ids))
                        .quiet(true)
                        .build()?,
                )
                .send()
                .await
                .context("s3:DeleteObjects failed")?;
            if let Some(err) = out.errors().first() {
                anyhow::bail!(
                    "s3:DeleteObjects could not delete {} ({}): {}",
                    err.key().unwrap_or("?"),
                    err.code().unwrap_or("?"),
                    err.message().unwrap_or("")
                );
            }
            removed += n;
        }
    }

    async fn put_versioning(&self, cx: &Cx) -> Result<()> {
        cx.aws
            .s3
            .put_bucket_versioning()
            .bucket(cx.stack.bucket_name())
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .context("s3:PutBucketVersioning failed")?;
        Ok(())
    }

    async fn put_encryption(&self, cx: &Cx) -> Result<()> {
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::Aes256)
                    .build()?,
            )
            .bucket_key_enabled(true)
            .build();
        cx.aws
            .s3
            .put_bucket_encryption()
            .bucket(cx.stack.bucket_name())
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()?,
            )
            .send()
            .await
            .context("s3:PutBucketEncryption failed")?;
        Ok(())
    }

    async fn put_lifecycle(&self, cx: &Cx) -> Result<()> {
        let rule = LifecycleRule::builder()
            .id(LIFECYCLE_RULE_ID)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .transitions(
                Transition::builder()
                    .days(GLACIER_AFTER_DAYS)
                    .storage_class(TransitionStorageClass::Glacier)
                    .build(),
            )
            .noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(NONCURRENT_EXPIRE_DAYS)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(ABORT_MULTIPART_DAYS)
                    .build(),
            )
            .build()?;
        cx.aws
            .s3
            .put_bucket_lifecycle_configuration()
            .bucket(cx.stack.bucket_name())
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .rules(rule)
                    .build()?,
            )
            .send()
            .await
            .context("s3:PutBucketLifecycleConfiguration failed")?;
        Ok(())
    }

    async fn put_public_access_block(&self, cx: &Cx) -> Result<()> {
        cx.aws
            .s3
            .put_public_access_block()
            .bucket(cx.stack.bucket_name())
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .context("s3:PutPublicAccessBlock failed")?;
        Ok(())
    }

    async fn put_policy(&self, cx: &Cx) -> Result<()> {
        let policy = Self::tls_policy(cx);
        if policy.is_null() {
            return match cx
                .aws
                .s3
                .delete_bucket_policy()
                .bucket(cx.stack.bucket_name())
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_code(&e, &["NoSuchBucketPolicy"]) => Ok(()),
                Err(e) => Err(e).context("s3:DeleteBucketPolicy failed"),
            };
        }
        cx.aws
            .s3
            .put_bucket_policy()
            .bucket(cx.stack.bucket_name())
            .policy(policy.to_string())
            .send()
            .await
            .context("s3:PutBucketPolicy failed")?;
        Ok(())
    }

    async fn put_tags(&self, cx: &Cx) -> Result<()> {
        let tags: Vec<Tag> = self
            .tags(cx)
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<_, _>>()?;
        cx.aws
            .s3
            .put_bucket_tagging()
            .bucket(cx.stack.bucket_name())
            .tagging(Tagging::builder().set_tag_set(Some(tags)).build()?)
            .send()
            .await
            .context("s3:PutBucketTagging failed")?;
        Ok(())
    }
}
