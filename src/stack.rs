//! The stack: names, tags, and the resources wired together. Reads top to
//! bottom like the Pulumi program it replaces.

use crate::engine::resource::Resource;
use crate::layout;
use crate::resources::alarm::{self, MetricAlarm};
use crate::resources::api_deployment::{ApiDeployment, ApiStage};
use crate::resources::rest_api::{ApiMethod, ApiRoute, RestApi};
use crate::resources::sns_topic::AlarmTopic;
use crate::resources::usage_plan::{ApiKey, UsagePlan, UsagePlanKey};
use crate::resources::{
    bucket_notification::FailureNotification,
    event_source_mapping::StreamMapping,
    lambda_function::LambdaFunction,
    lambda_permission::LambdaPermission,
    vpc::{
        GatewayEndpoint, Net, RouteTable, RouteTableAssociations, SecurityGroup, Subnet, Vpc,
        VpcDns,
    },
};
use crate::resources::{
    dynamodb_table::EventsTable,
    iam_role::{FunctionRole, StreamReadPolicy},
    log_group::LogGroup,
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
    /// The ARN partition (`aws`, `aws-cn`, `aws-us-gov`, ...).
    pub partition: String,
    pub opts: StackOptions,
}

/// Choices the operator makes on the command line that shape the stack.
/// New options get a field here and a default in `Default`.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// POST /webhook requires an API key (`--no-api-key` turns it off for
    /// senders that cannot add headers, such as Stripe and GitHub).
    pub api_key_required: bool,
    /// Steady-state requests per second, stage `*/*` and usage plan.
    pub throttle_rate: f64,
    /// Burst, stage `*/*` and usage plan (the account default limit is 5000).
    pub throttle_burst: i32,
    /// Address subscribed to the alarm topic.
    pub alarm_email: Option<String>,
    /// Functions run in the stack's private subnets (`--no-vpc`: outside
    /// any VPC, and the stack owns no network resources).
    pub vpc: bool,
    /// Memory (MB) and timeout (s) per function, indexed by `Function::index`.
    pub memory_mb: [i32; 3],
    pub timeout_s: [i32; 3],
    /// How the receiver verifies senders.
    pub signature: Signature,
    /// The signing secret from the operator's environment variable; `None`:
    /// generated once and then read back from the function's configuration.
    pub signing_secret: Option<Secret>,
    /// How long `down` waits for Lambda's network interfaces to go before
    /// subnets and the security group can be deleted.
    pub eni_timeout: std::time::Duration,
    /// The bucket policy denying non-TLS access. Off only for `local`
    /// against a plain-HTTP emulator, where it would deny every request.
    pub deny_insecure_transport: bool,
    /// The settings `up` records (`crate::settings`): written as tags on the
    /// receiver function so that a lost state file loses none of them.
    pub recorded: BTreeMap<String, String>,
    /// `down --delete-data`: the table's items and the archive's objects go too.
    pub delete_data: bool,
    /// `--adopt-untagged`: take over an object with the stack's name that
    /// carries no stack tag.
    pub adopt_untagged: bool,
}

/// Webhook signature schemes the receiver understands (`SIGNATURE_SCHEME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Signature {
    StandardWebhooks,
    Stripe,
    Github,
    None,
}

impl Signature {
    /// The scheme named `s` (its `as_str()`).
    pub fn parse(s: &str) -> Option<Signature> {
        <Signature as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|x| x.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signature::StandardWebhooks => "standard-webhooks",
            Signature::Stripe => "stripe",
            Signature::Github => "github",
            Signature::None => "none",
        }
    }
}

/// A secret value: never shown by `Debug`, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub value: String,
    /// Where it came from, for messages (e.g. `$WEBHOOK_SECRET`).
    pub source: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(from {})", self.source)
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            api_key_required: true,
            throttle_rate: 10000.0,
            throttle_burst: 5000,
            alarm_email: None,
            vpc: true,
            memory_mb: [512; 3],
            timeout_s: [30; 3],
            signature: Signature::StandardWebhooks,
            signing_secret: None,
            eni_timeout: std::time::Duration::from_secs(45 * 60),
            deny_insecure_transport: true,
            recorded: BTreeMap::new(),
            delete_data: false,
            adopt_untagged: false,
        }
    }
}

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

    /// Position in `ALL` (and in per-function option arrays).
    pub fn index(self) -> usize {
        match self {
            Function::Receiver => 0,
            Function::Processor => 1,
            Function::DeadLetter => 2,
        }
    }

    /// The embedded deployment package's name (`crate::lambdas`).
    pub fn package(self) -> &'static str {
        match self {
            Function::Receiver => "receiver",
            Function::Processor => "processor",
            Function::DeadLetter => "dead-letter-handler",
        }
    }

    /// The function with this `key()`.
    pub fn from_key(k: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.key() == k)
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

/// The API's only stage.
pub const STAGE: &str = "prod";
/// The API's only resource: `/webhook`.
pub const WEBHOOK_PATH_PART: &str = "webhook";

/// The invoke URL senders post to.
pub fn api_url(api_id: &str, region: &str) -> String {
    let domain = crate::aws::dns_suffix(region);
    format!("https://{api_id}.execute-api.{region}.{domain}/{STAGE}/{WEBHOOK_PATH_PART}")
}

pub const TAG_STACK: &str = "webhook-deploy:stack";
pub const TAG_RESOURCE: &str = "webhook-deploy:resource";
/// On objects whose names are global to the account (IAM roles): the
/// region of the stack, since one suffix in two regions is two stacks.
pub const TAG_REGION: &str = "webhook-deploy:region";

impl Settings {
    /// The stack `suffix` in the account and region `aws` is connected to.
    pub fn new(suffix: &str, aws: &crate::aws::Clients, opts: StackOptions) -> Self {
        Settings {
            suffix: suffix.to_string(),
            region: aws.region.clone(),
            account: aws.account.clone(),
            partition: aws.partition.clone(),
            opts,
        }
    }

    /// `arn:<partition>:<service>:<region>:<account>:<resource>`.
    pub fn arn(&self, service: &str, region: &str, account: &str, resource: &str) -> String {
        format!(
            "arn:{}:{service}:{region}:{account}:{resource}",
            self.partition
        )
    }

    /// An ARN in the stack's region and account.
    pub fn own_arn(&self, service: &str, resource: &str) -> String {
        self.arn(service, &self.region, &self.account, resource)
    }

    /// An API Gateway resource's ARN (`path`: `/restapis/<id>`, ...).
    pub fn apigateway_arn(&self, path: &str) -> String {
        self.arn("apigateway", &self.region, "", path)
    }

    /// The owner an object of this stack names in its tags (`Owner::Stack`);
    /// `global`: an object whose name is global to the account.
    pub fn owner(&self, global: bool) -> String {
        if global {
            format!("{}@{}", self.suffix, self.region)
        } else {
            self.suffix.clone()
        }
    }

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
    /// A function's environment without secrets: the names it works on and,
    /// for the receiver, the signature scheme.
    pub fn function_env(&self, f: Function) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("TABLE_NAME".to_string(), self.table_name())]);
        match f {
            Function::Receiver => {
                env.insert(
                    "SIGNATURE_SCHEME".into(),
                    self.opts.signature.as_str().into(),
                );
            }
            Function::Processor | Function::DeadLetter => {
                env.insert("BUCKET_NAME".into(), self.bucket_name());
            }
        }
        env
    }

    pub fn function_arn(&self, f: Function) -> String {
        self.own_arn("lambda", &format!("function:{}", self.function_name(f)))
    }

    pub fn log_group_name(&self, f: Function) -> String {
        format!("/aws/lambda/{}", self.function_name(f))
    }

    pub fn vpc_name(&self) -> String {
        self.name("webhook-vpc")
    }

    pub fn role_name(&self, f: Function) -> String {
        self.name(&format!("{}-role", f.base_name()))
    }

    pub fn table_arn(&self) -> String {
        self.own_arn("dynamodb", &format!("table/{}", self.table_name()))
    }

    pub fn bucket_arn(&self) -> String {
        self.arn("s3", "", "", &self.bucket_name())
    }

    pub fn log_group_arn(&self, f: Function) -> String {
        self.own_arn("logs", &format!("log-group:{}", self.log_group_name(f)))
    }

    pub fn api_name(&self) -> String {
        self.name("webhook-api")
    }

    pub fn usage_plan_name(&self) -> String {
        self.name("webhook-usage-plan")
    }

    pub fn api_key_name(&self) -> String {
        self.name("webhook-api-key")
    }

    pub fn alarm_topic_name(&self) -> String {
        self.name("webhook-alarms")
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
    /// The processor role's stream-read policy.
    pub const STREAM_POLICY: &str = "processor-stream-policy";
    /// Attributes: `name`, `arn`.
    pub fn function(f: super::Function) -> String {
        format!("{}-function", f.key())
    }

    // Network (absent with `--no-vpc`). Attribute `id` on each.
    pub const VPC: &str = "vpc";
    pub const SUBNETS: [&str; 2] = ["subnet-a", "subnet-b"];
    pub const VPC_DNS: &str = "vpc-dns";
    pub const ROUTE_TABLE: &str = "route-table";
    pub const ROUTE_TABLE_ASSOCIATIONS: &str = "route-table-associations";
    pub const SECURITY_GROUP: &str = "lambda-sg";
    pub const S3_ENDPOINT: &str = "s3-endpoint";
    pub const DYNAMODB_ENDPOINT: &str = "dynamodb-endpoint";

    // Stream → processor, and failure records → dead-letter handler.
    pub const STREAM_MAPPING: &str = "stream-mapping";
    pub const FAILURE_PERMISSION: &str = "dead-letter-s3-permission";
    pub const FAILURE_NOTIFICATION: &str = "failure-notification";

    // API front door. Attributes of `API`: `id`, `root_resource_id`, `execution_arn`.
    pub const API: &str = "api";
    pub const API_ROUTE: &str = "api-webhook-resource";
    pub const API_METHOD: &str = "api-webhook-post";
    pub const API_PERMISSION: &str = "api-invoke-permission";
    pub const API_DEPLOYMENT: &str = "api-deployment";
    pub const API_STAGE: &str = "api-stage";
    pub const USAGE_PLAN: &str = "api-usage-plan";
    pub const API_KEY: &str = "api-key";
    pub const USAGE_PLAN_KEY: &str = "api-usage-plan-key";

    // Monitoring. Attributes of `ALARM_TOPIC`: `arn`, `name`.
    pub const ALARM_TOPIC: &str = "alarm-topic";
    pub fn error_rate_alarm(f: super::Function) -> String {
        format!("{}-error-rate-alarm", f.key())
    }
    pub const ITERATOR_AGE_ALARM: &str = "processor-iterator-age-alarm";
    pub const DEAD_LETTER_ALARM: &str = "dead-letter-alarm";
    pub const API_5XX_ALARM: &str = "api-5xx-alarm";
}

/// The whole stack, in dependency order.
pub fn define(s: &Settings) -> Vec<Arc<dyn Resource>> {
    let mut stack: Vec<Arc<dyn Resource>> = Vec::new();

    // Network: private subnets with gateway endpoints, no NAT.
    define_network(s, &mut stack);

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

    // Identity: one role per function, every statement scoped to its ARN;
    // the processor's stream reads as soon as the table has a stream.
    for f in Function::ALL {
        stack.push(Arc::new(FunctionRole::new(&ids::role(f), f)));
    }
    stack.push(Arc::new(StreamReadPolicy::new(ids::STREAM_POLICY)));

    // Compute: the functions, the stream mapping, the failure wiring.
    define_compute(s, &mut stack);

    define_api(&mut stack);
    define_monitoring(s, &mut stack);
    stack
}

/// The stack's network resources, which the functions run in.
fn network_ids() -> Vec<String> {
    let mut v = vec![ids::VPC.to_string(), ids::VPC_DNS.to_string()];
    v.extend(ids::SUBNETS.map(String::from));
    v.extend(
        [
            ids::ROUTE_TABLE,
            ids::ROUTE_TABLE_ASSOCIATIONS,
            ids::SECURITY_GROUP,
            ids::S3_ENDPOINT,
            ids::DYNAMODB_ENDPOINT,
        ]
        .map(String::from),
    );
    v
}

/// VPC → its DNS settings, subnets, route table and security group →
/// the subnets' route-table associations and the endpoints on that route
/// table: three rounds of calls. With `--no-vpc` the same resources are
/// unwanted and their dependencies run the other way: they go only after
/// the functions have left the VPC, the VPC last.
fn define_network(s: &Settings, stack: &mut Vec<Arc<dyn Resource>>) {
    let wanted = s.opts.vpc;
    let functions: Vec<String> = Function::ALL.iter().map(|f| ids::function(*f)).collect();
    let own = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let net = |id: &str, when_wanted: Vec<String>, when_unwanted: Vec<String>| Net {
        id: id.into(),
        deps: if wanted { when_wanted } else { when_unwanted },
        wanted,
    };
    let after_functions = |v: &[&str]| [own(v), functions.clone()].concat();
    let vpc_after = network_ids()[1..].to_vec();

    stack.push(Arc::new(Vpc::new(net(ids::VPC, vec![], vpc_after))));
    stack.push(Arc::new(VpcDns::new(net(
        ids::VPC_DNS,
        own(&[ids::VPC]),
        functions.clone(),
    ))));
    for (i, id) in ids::SUBNETS.iter().enumerate() {
        stack.push(Arc::new(Subnet::new(
            net(
                id,
                own(&[ids::VPC]),
                after_functions(&[ids::ROUTE_TABLE, ids::ROUTE_TABLE_ASSOCIATIONS]),
            ),
            i,
        )));
    }
    stack.push(Arc::new(RouteTable::new(net(
        ids::ROUTE_TABLE,
        own(&[ids::VPC]),
        after_functions(&[
            ids::ROUTE_TABLE_ASSOCIATIONS,
            ids::S3_ENDPOINT,
            ids::DYNAMODB_ENDPOINT,
        ]),
    ))));
    stack.push(Arc::new(RouteTableAssociations::new(net(
        ids::ROUTE_TABLE_ASSOCIATIONS,
        own(&[ids::ROUTE_TABLE, ids::SUBNETS[0], ids::SUBNETS[1]]),
        functions.clone(),
    ))));
    stack.push(Arc::new(SecurityGroup::new(net(
        ids::SECURITY_GROUP,
        own(&[ids::VPC]),
        functions.clone(),
    ))));
    for (id, service) in [
        (ids::S3_ENDPOINT, "s3"),
        (ids::DYNAMODB_ENDPOINT, "dynamodb"),
    ] {
        stack.push(Arc::new(GatewayEndpoint::new(
            net(id, own(&[ids::VPC, ids::ROUTE_TABLE]), functions.clone()),
            service,
        )));
    }
}

/// The three functions (after their roles, so `down` removes them first),
/// the stream → processor mapping, and failure records → dead-letter handler.
fn define_compute(s: &Settings, stack: &mut Vec<Arc<dyn Resource>>) {
    // In the VPC a function waits for its whole network: with no NAT, it
    // reaches DynamoDB and S3 only through the endpoints on the subnets'
    // route table, and must not go live (e.g. when `up` moves a serving
    // stack into the VPC) before they are there.
    let network = if s.opts.vpc { network_ids() } else { vec![] };
    for f in Function::ALL {
        stack.push(Arc::new(LambdaFunction::new(
            &ids::function(f),
            f,
            network.clone(),
        )));
    }
    stack.push(Arc::new(StreamMapping::new(ids::STREAM_MAPPING)));
    stack.push(Arc::new(LambdaPermission::new(
        ids::FAILURE_PERMISSION,
        Function::DeadLetter,
        "s3.amazonaws.com",
        |cx| Ok(cx.stack.bucket_arn()),
        true,
        vec![ids::BUCKET.into()],
    )));
    stack.push(Arc::new(FailureNotification::new(
        ids::FAILURE_NOTIFICATION,
    )));
}

/// The front door: REST API → /webhook → POST (AWS_PROXY to the receiver),
/// deployed to stage `prod`, throttled by a usage plan that holds the API key.
fn define_api(stack: &mut Vec<Arc<dyn Resource>>) {
    stack.push(Arc::new(RestApi::new(ids::API)));
    stack.push(Arc::new(ApiRoute::new(ids::API_ROUTE)));
    stack.push(Arc::new(ApiMethod::new(ids::API_METHOD)));
    stack.push(Arc::new(LambdaPermission::new(
        ids::API_PERMISSION,
        Function::Receiver,
        "apigateway.amazonaws.com",
        // Any stage, POST /webhook of this API only.
        |cx| {
            Ok(format!(
                "{}/*/POST/{WEBHOOK_PATH_PART}",
                cx.attr(ids::API, "execution_arn")?
            ))
        },
        false,
        vec![ids::API.into()],
    )));
    // A new deployment only when the definition's fingerprint changed.
    stack.push(Arc::new(ApiDeployment::new(ids::API_DEPLOYMENT)));
    stack.push(Arc::new(ApiStage::new(ids::API_STAGE)));
    stack.push(Arc::new(UsagePlan::new(ids::USAGE_PLAN)));
    // The key exists with --no-api-key too (the method just stops asking
    // for it), so switching back does not hand senders a new key.
    stack.push(Arc::new(ApiKey::new(ids::API_KEY)));
    stack.push(Arc::new(UsagePlanKey::new(ids::USAGE_PLAN_KEY)));
}

/// Alarms on error rates, stream lag, dead letters and API 5XX, all
/// notifying one SNS topic.
fn define_monitoring(s: &Settings, stack: &mut Vec<Arc<dyn Resource>>) {
    stack.push(Arc::new(AlarmTopic::new(ids::ALARM_TOPIC)));
    for f in Function::ALL {
        stack.push(Arc::new(MetricAlarm::new(
            &ids::error_rate_alarm(f),
            alarm::error_rate(s, f),
        )));
    }
    stack.push(Arc::new(MetricAlarm::new(
        ids::ITERATOR_AGE_ALARM,
        alarm::iterator_age(s),
    )));
    stack.push(Arc::new(MetricAlarm::new(
        ids::DEAD_LETTER_ALARM,
        alarm::dead_letters(s),
    )));
    stack.push(Arc::new(MetricAlarm::new(
        ids::API_5XX_ALARM,
        alarm::api_5xx(s),
    )));
}

/// The EC2 actions a VPC function's role needs for its network interfaces.
pub const VPC_ENI_ACTIONS: [&str; 6] = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
];

/// The least-privilege inline policy of one function's role (the
/// processor's stream reads are in `stream_policy`).
pub fn role_policy(s: &Settings, f: Function) -> serde_json::Value {
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
            // The init-time connection warm-up (HeadBucket) needs it; without
            // it every cold start logs an AccessDenied.
            statements.push(json!({
                "Sid": "WarmUpHeadBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": bucket,
            }));
        }
    }
    // The only statements AWS cannot scope to a resource ARN (so "*").
    statements.push(json!({
        "Sid": "XRayWrites",
        "Effect": "Allow",
        "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Resource": "*",
    }));
    // Each function opens its DynamoDB connection during init with
    // DescribeEndpoints (embedded-lambdas' prewarm); denied, it would log an
    // AccessDenied in CloudTrail on every cold start.
    statements.push(json!({
        "Sid": "WarmUpDynamoDbConnection",
        "Effect": "Allow",
        "Action": ["dynamodb:DescribeEndpoints"],
        "Resource": "*",
    }));
    if s.opts.vpc {
        // What the Lambda developer guide lists for VPC functions: Lambda
        // manages the function's network interfaces with its role.
        statements.push(json!({
            "Sid": "VpcNetworkInterfaces",
            "Effect": "Allow",
            "Action": VPC_ENI_ACTIONS,
            "Resource": "*",
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The processor role's second inline policy: reading the table's stream.
/// Separate because the stream ARN exists only once the table does, while
/// the role and the function need not wait for the table.
pub fn stream_policy(s: &Settings, stream_arn: &str) -> serde_json::Value {
    use serde_json::json;
    json!({ "Version": "2012-10-17", "Statement": [
        {
            "Sid": "ReadStream",
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
            "Resource": stream_arn,
        },
        {
            "Sid": "ListStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:ListStreams"],
            "Resource": format!("{}/stream/*", s.table_arn()),
        },
    ]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            suffix: "dev".into(),
            region: "us-east-1".into(),
            account: "123456789012".into(),
            partition: "aws".into(),
            opts: StackOptions::default(),
        }
    }

    #[test]
    fn one_describe_covers_every_alarm_of_the_stack() {
        let s = settings();
        let alarms = define(&s)
            .iter()
            .filter(|r| r.kind() == "cloudwatch-alarm")
            .count();
        let names = alarm::stack_alarm_names(&s);
        assert_eq!(alarms, names.len(), "{names:?}");
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    /// `inside` skips a read because the container was just created: the
    /// container must be done first, so it has to be an ancestor.
    #[test]
    fn every_container_is_an_ancestor() {
        let s = settings();
        let stack = define(&s);
        let ancestors = crate::engine::graph::ancestors(&crate::engine::nodes(&stack));
        let mut checked = 0;
        for r in &stack {
            let Some(container) = r.inside() else {
                continue;
            };
            assert!(
                ancestors[r.id()].contains(container),
                "{} is inside {container}",
                r.id()
            );
            checked += 1;
        }
        assert_eq!(
            checked, 17,
            "route, method, deployment, stage, plan key, 8 network, 2 permissions, notification, stream mapping"
        );
    }

    /// The functions wait for the whole network, which is three rounds of
    /// calls deep: the VPC; its DNS settings, subnets, route table and
    /// security group; the associations and endpoints.
    #[test]
    fn the_network_is_three_steps_deep() {
        let stack = define(&settings());
        let deps: BTreeMap<&str, Vec<String>> =
            stack.iter().map(|r| (r.id(), r.depends_on())).collect();
        fn depth(id: &str, deps: &BTreeMap<&str, Vec<String>>) -> usize {
            1 + deps[id].iter().map(|d| depth(d, deps)).max().unwrap_or(0)
        }
        let network = network_ids();
        let deepest = network.iter().map(|id| depth(id, &deps)).max();
        assert_eq!(deepest, Some(3));
        for f in Function::ALL {
            let id = ids::function(f);
            for n in &network {
                assert!(deps[id.as_str()].contains(n), "{id} does not wait for {n}");
            }
        }
    }

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
    fn down_deletes_the_api_with_its_contents_and_the_rest_one_by_one() {
        let resources = define(&settings());
        let nodes = crate::engine::nodes(&resources);
        let by_id = resources
            .iter()
            .map(|r| (r.id().to_string(), r.clone()))
            .collect();
        let (graph, swept) = crate::engine::teardown_plan(&nodes, &by_id);
        let mut contents: Vec<&str> = swept.keys().map(String::as_str).collect();
        contents.sort();
        assert_eq!(
            contents,
            [
                ids::API_DEPLOYMENT,
                ids::API_STAGE,
                ids::API_METHOD,
                ids::API_ROUTE
            ]
        );
        assert!(swept.values().all(|c| c == ids::API));
        crate::engine::graph::validate(&graph).unwrap();
        let waits = |id: &str| {
            let mut d = graph.iter().find(|n| n.id == id).unwrap().deps.clone();
            d.sort();
            d
        };
        assert_eq!(waits(ids::API_STAGE), [ids::API]);
        assert_eq!(waits(ids::API), [ids::API_PERMISSION, ids::USAGE_PLAN]);
    }

    #[test]
    fn policies_scope_every_statement_to_an_arn() {
        let s = settings();
        for vpc in [true, false] {
            let s = Settings {
                opts: StackOptions {
                    vpc,
                    ..StackOptions::default()
                },
                ..s.clone()
            };
            for f in Function::ALL {
                let mut p = role_policy(&s, f);
                if f == Function::Processor {
                    let stream = stream_policy(
                        &s,
                        "arn:aws:dynamodb:us-east-1:123456789012:table/webhook-events-dev/stream/X",
                    );
                    let mut all = p["Statement"].as_array().unwrap().clone();
                    all.extend(stream["Statement"].as_array().unwrap().iter().cloned());
                    p["Statement"] = serde_json::Value::Array(all);
                }
                let text = p.to_string();
                assert!(!text.contains("arn:aws:logs:*"), "{text}");
                let mut unscoped = Vec::new();
                for st in p["Statement"].as_array().unwrap() {
                    if st["Resource"] == "*" {
                        // Only what AWS cannot scope: X-Ray writes, VPC ENI
                        // actions, DynamoDB's endpoint discovery.
                        for a in st["Action"].as_array().unwrap() {
                            let a = a.as_str().unwrap();
                            assert!(
                                a.starts_with("xray:Put")
                                    || VPC_ENI_ACTIONS.contains(&a)
                                    || a == "dynamodb:DescribeEndpoints",
                                "{f:?}: {a} on *: {text}"
                            );
                            unscoped.push(a.to_string());
                        }
                    } else {
                        assert!(
                            !st.to_string().contains("\"*\""),
                            "{f:?} has a wildcard resource: {st}"
                        );
                    }
                }
                assert_eq!(
                    unscoped.iter().any(|a| a.starts_with("ec2:")),
                    vpc,
                    "{f:?}: ENI actions only in a VPC"
                );
                assert!(
                    unscoped.iter().any(|a| a == "xray:PutTraceSegments"),
                    "{f:?}: X-Ray writes"
                );
            }
        }
    }
}
