//! AWS clients, built once per run from the standard configuration chain.

use anyhow::{anyhow, Context, Result};
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_types::error::display::DisplayErrorContext;
use std::time::Duration;

/// Connection settings from the command line; everything unset falls back to
/// the standard AWS chain (env, profile, SSO, IMDS).
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
}

impl From<&crate::cli::Common> for ConnectOptions {
    fn from(c: &crate::cli::Common) -> Self {
        Self {
            region: c.region.clone(),
            profile: c.profile.clone(),
            endpoint_url: c.endpoint_url.clone(),
        }
    }
}

/// One client per service, sharing one credentials cache and HTTP connector.
#[derive(Clone, Debug)]
pub struct Clients {
    pub region: String,
    /// The ARN partition of the account (`aws` in the commercial regions).
    pub partition: String,
    pub account: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub iam: aws_sdk_iam::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub apigateway: aws_sdk_apigateway::Client,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodbstreams: aws_sdk_dynamodbstreams::Client,
    /// The loaded configuration (credentials provider, endpoint), for the
    /// functions `local` and `invoke` run.
    pub sdk: aws_config::SdkConfig,
}

/// Who the credentials belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    /// The ARN partition (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub partition: String,
}

/// Configuration loaded and checked, the account not looked up yet.
pub struct Prepared {
    sdk: aws_config::SdkConfig,
    region: String,
    endpoint_url: Option<String>,
    sts: aws_sdk_sts::Client,
}

impl Prepared {
    pub fn region(&self) -> &str {
        &self.region
    }

    /// One STS call. It fails fast: an unreachable endpoint or refused
    /// credentials do not get better over the 10 attempts other calls get.
    pub async fn identity(&self) -> Result<Identity> {
        let who =
            self.sts.get_caller_identity().send().await.map_err(|e| {
                account_lookup_failed(e, self.endpoint_url.as_deref(), &self.region)
            })?;
        let account = who
            .account()
            .context("sts:GetCallerIdentity returned no account id")?
            .to_string();
        // The caller's own ARN names the partition that every ARN the stack
        // writes must use.
        let partition = who
            .arn()
            .and_then(|arn| arn.split(':').nth(1))
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| partition_of(&self.region).to_string());
        Ok(Identity { account, partition })
    }

    /// The clients, for `who` (looked up, or assumed until the lookup answers).
    pub fn clients(&self, who: &Identity) -> Clients {
        let sdk = &self.sdk;
        // Path-style addressing: virtual-host names do not resolve on an
        // emulator at 127.0.0.1/localhost.
        let s3_conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(self.endpoint_url.is_some() || sdk.endpoint_url().is_some())
            .build();
        Clients {
            region: self.region.clone(),
            account: who.account.clone(),
            partition: who.partition.clone(),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            iam: aws_sdk_iam::Client::new(sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
            apigateway: aws_sdk_apigateway::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            dynamodbstreams: aws_sdk_dynamodbstreams::Client::new(sdk),
            sdk: sdk.clone(),
        }
    }
}

impl Clients {
    /// Loads configuration and resolves the account with one STS call, so a
    /// missing credential or region fails here, before anything is touched.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let prepared = Self::prepare(opts).await?;
        let who = prepared.identity().await?;
        Ok(prepared.clients(&who))
    }

    /// Loads and checks the configuration (endpoint URL, region); no call.
    pub async fn prepare(opts: &ConnectOptions) -> Result<Prepared> {
        if let Some(url) = &opts.endpoint_url {
            check_endpoint_url(url)?;
        }
        let sdk = load_sdk_config(opts).await;
        let profile = opts
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()));
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| match &profile {
            Some(p) => anyhow!("no AWS region is configured for profile '{p}' (is it in ~/.aws/config? `aws configure list-profiles` lists them): pass --region or set AWS_REGION"),
            None => anyhow!("no AWS region is configured: pass --region or set AWS_REGION (or a region in your AWS profile)"),
        })?;
        check_region(&region)?;
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&sdk)
                .retry_config(RetryConfig::standard().with_max_attempts(3))
                .build(),
        );
        Ok(Prepared {
            endpoint_url: opts.endpoint_url.clone(),
            sdk,
            region,
            sts,
        })
    }
}

/// `--endpoint-url` (or `AWS_ENDPOINT_URL`) must be an http(s) URL.
fn check_endpoint_url(url: &str) -> Result<()> {
    let ok = url
        .parse::<hyper::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if !ok {
        anyhow::bail!("invalid endpoint URL '{url}' (--endpoint-url or AWS_ENDPOINT_URL): give an http:// or https:// URL, e.g. http://127.0.0.1:4566");
    }
    Ok(())
}

fn check_region(region: &str) -> Result<()> {
    let ok = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        anyhow::bail!("invalid AWS region '{region}': a region name looks like us-east-1");
    }
    Ok(())
}

/// One sentence for a failed account lookup: which of credentials, network
/// or endpoint is at fault, and what to do.
fn account_lookup_failed<R: std::fmt::Debug + 'static>(
    e: aws_sdk_sts::error::SdkError<
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError,
        R,
    >,
    endpoint: Option<&str>,
    region: &str,
) -> anyhow::Error {
    use aws_sdk_sts::error::{ProvideErrorMetadata as _, SdkError};
    let creds_hint = "check your credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or `aws sso login`)";
    let target = match endpoint {
        Some(url) => format!("the endpoint {url}"),
        None => format!("AWS STS in {region}"),
    };
    match &e {
        SdkError::ServiceError(se) => anyhow!(
            "AWS refused the credentials (sts:GetCallerIdentity: {}: {}); {creds_hint}",
            se.err().code().unwrap_or("error"),
            se.err().message().unwrap_or("no message")
        ),
        SdkError::TimeoutError(_) => {
            anyhow!("cannot reach {target}: the account lookup (sts:GetCallerIdentity) timed out; check the network, proxy settings and --endpoint-url")
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => anyhow!(
            "cannot reach {target} for the account lookup (sts:GetCallerIdentity): {}; check the network, proxy settings and --endpoint-url",
            root_cause(&e)
        ),
        _ => {
            let cause = root_cause(&e);
            if cause.contains("credential") {
                anyhow!("no AWS credentials found ({cause}); {creds_hint}")
            } else {
                anyhow!(
                    "cannot identify the AWS account (sts:GetCallerIdentity failed: {cause}); {creds_hint}"
                )
            }
        }
    }
}

/// The innermost message of an error chain: the SDK's outer layers say only
/// "dispatch failure" or "service error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

async fn load_sdk_config(opts: &ConnectOptions) -> aws_config::SdkConfig {
    // Standard mode: exponential backoff with jitter on throttling and 5xx.
    // (Adaptive mode's client-side rate limiter slowed a run with 20% of calls
    // throttled from 10 s to 2 minutes.) API Gateway's TooManyRequests on
    // control-plane calls also gets a bounded retry in its resources.
    let retry = RetryConfig::standard()
        .with_max_attempts(10)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry);
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

impl Clients {
    /// The environment a function needs to call the same AWS (or emulator)
    /// with the operator's credentials: region, keys, endpoint. Holds secret
    /// key material: only for a child process's environment.
    pub async fn function_aws_env(&self) -> Result<std::collections::BTreeMap<String, String>> {
        use aws_credential_types::provider::ProvideCredentials as _;
        let provider = self
            .sdk
            .credentials_provider()
            .context("no AWS credentials are configured")?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| anyhow!("cannot load AWS credentials: {}", DisplayErrorContext(&e)))?;
        let mut env = std::collections::BTreeMap::from([
            ("AWS_REGION".to_string(), self.region.clone()),
            ("AWS_DEFAULT_REGION".to_string(), self.region.clone()),
            (
                "AWS_ACCESS_KEY_ID".to_string(),
                creds.access_key_id().to_string(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                creds.secret_access_key().to_string(),
            ),
        ]);
        if let Some(t) = creds.session_token() {
            env.insert("AWS_SESSION_TOKEN".into(), t.to_string());
        }
        if let Some(url) = self.sdk.endpoint_url() {
            env.insert("AWS_ENDPOINT_URL".into(), url.to_string());
        }
        Ok(env)
    }
}

/// Partitions other than `aws`: region prefix, partition, endpoint domain
/// (`us-isob-` before `us-iso-`: the first matching prefix wins).
const PARTITIONS: &[(&str, &str, &str)] = &[
    ("cn-", "aws-cn", "amazonaws.com.cn"),
    ("us-gov-", "aws-us-gov", "amazonaws.com"),
    ("us-isob-", "aws-iso-b", "sc2s.sgov.gov"),
    ("us-iso-", "aws-iso", "c2s.ic.gov"),
    ("eu-isoe-", "aws-iso-e", "cloud.adc-e.uk"),
    ("us-isof-", "aws-iso-f", "csp.hci.ic.gov"),
    ("eusc-", "aws-eusc", "amazonaws.eu"),
];

fn partition_entry(region: &str) -> (&'static str, &'static str) {
    PARTITIONS
        .iter()
        .find(|(prefix, _, _)| region.starts_with(prefix))
        .map(|&(_, partition, domain)| (partition, domain))
        .unwrap_or(("aws", "amazonaws.com"))
}

/// The ARN partition of a region, for when the caller's ARN does not say.
pub fn partition_of(region: &str) -> &'static str {
    partition_entry(region).0
}

/// The domain of a region's service endpoints.
pub fn dns_suffix(region: &str) -> &'static str {
    partition_entry(region).1
}

/// An error chain as one line for people: the SDK's generic layers
/// ("service error", "unhandled error (X)") are dropped and its error
/// metadata is shown as `Code: message`, not as a debug struct.
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut chain = e.chain().peekable();
    while let Some(layer) = chain.next() {
        if let Some(meta) = layer.downcast_ref::<aws_smithy_types::error::ErrorMetadata>() {
            parts.push(format!(
                "{}: {}",
                meta.code().unwrap_or("error"),
                meta.message().unwrap_or("no message")
            ));
            continue;
        }
        let text = layer.to_string();
        let generic = text == "service error"
            || (text.starts_with("unhandled error (") && chain.peek().is_some());
        if generic || parts.last().is_some_and(|p| p.ends_with(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_errors_read_as_code_and_message() {
        let meta = aws_smithy_types::error::ErrorMetadata::builder()
            .code("AccessDenied")
            .message("User is not authorized to perform sns:CreateTopic")
            .build();
        let err = aws_sdk_sns::operation::create_topic::CreateTopicError::generic(meta);
        let e = anyhow::Error::new(err).context("sns:CreateTopic failed");
        assert_eq!(
            describe_error(&e),
            "sns:CreateTopic failed: AccessDenied: User is not authorized to perform sns:CreateTopic"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(describe_error(&plain), "outer: inner");
    }

    #[test]
    fn partitions_and_domains_follow_the_region() {
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(partition_of("cn-northwest-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
        assert_eq!(partition_of("us-isob-east-1"), "aws-iso-b");
        assert_eq!(partition_of("us-iso-east-1"), "aws-iso");
        assert_eq!(dns_suffix("cn-north-1"), "amazonaws.com.cn");
        assert_eq!(dns_suffix("us-gov-east-1"), "amazonaws.com");
        assert_eq!(partition_of("eusc-de-east-1"), "aws-eusc");
        assert_eq!(dns_suffix("eusc-de-east-1"), "amazonaws.eu");
        assert_eq!(
            crate::stack::api_url("abc", "cn-north-1"),
            "https://abc.execute-api.cn-north-1.amazonaws.com.cn/prod/webhook"
        );
    }
}
