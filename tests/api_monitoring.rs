//! The API front door and the monitoring layer against moto, through the
//! recording proxy: every setting read back, no-op runs, redeployment only
//! on a definition change, secrets kept out of state and output, flags that
//! flip settings, and teardown.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;
use support::cli::{Env, Out};
use support::proxy::{Matcher, Proxy, Rule};

const SUFFIX: &str = "t5";
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const API_NAME: &str = "webhook-api-t5";
const RECEIVER: &str = "webhook-receiver-t5";
const TOPIC_ARN: &str = "arn:aws:sns:us-east-1:123456789012:webhook-alarms-t5";
const EMAIL: &str = "oncall@example.com";

/// The API and alarms do not depend on the network layer: run without a
/// VPC, which keeps these tests fast and focused.
const NO_VPC: &str = "--no-vpc";

fn start() -> Env {
    Env::start(SUFFIX)
}

fn run(env: &Env, args: &[&str]) -> Out {
    let mut a = args.to_vec();
    a.push(NO_VPC);
    env.run(&a)
}

/// `up` that must succeed.
fn up(env: &Env, args: &[&str]) -> Out {
    let mut a = vec!["up"];
    a.extend_from_slice(args);
    let out = run(env, &a);
    assert_eq!(out.code, 0, "{out:?}");
    out
}

fn state_text(env: &Env) -> String {
    std::fs::read_to_string(env.state_file()).unwrap()
}

/// CreateDeployment calls the deployer made (REST operation names carry the path).
fn create_deployment_calls(proxy: &Proxy) -> usize {
    proxy
        .calls()
        .iter()
        .filter(|c| {
            c.service == "apigateway"
                && c.operation.starts_with("POST /restapis/")
                && c.operation.ends_with("/deployments")
        })
        .count()
}

async fn api_id(gw: &aws_sdk_apigateway::Client) -> Option<String> {
    let apis = gw.get_rest_apis().send().await.unwrap();
    apis.items()
        .iter()
        .find(|a| a.name() == Some(API_NAME))
        .and_then(|a| a.id().map(str::to_string))
}

async fn webhook_resource(gw: &aws_sdk_apigateway::Client, api: &str) -> String {
    let res = gw.get_resources().rest_api_id(api).send().await.unwrap();
    res.items()
        .iter()
        .find(|r| r.path() == Some("/webhook"))
        .and_then(|r| r.id())
        .expect("/webhook")
        .to_string()
}

async fn deployment_ids(gw: &aws_sdk_apigateway::Client, api: &str) -> Vec<String> {
    let d = gw.get_deployments().rest_api_id(api).send().await.unwrap();
    d.items()
        .iter()
        .map(|d| d.id().unwrap().to_string())
        .collect()
}

async fn stage_deployment(gw: &aws_sdk_apigateway::Client, api: &str) -> String {
    gw.get_stage()
        .rest_api_id(api)
        .stage_name("prod")
        .send()
        .await
        .unwrap()
        .deployment_id()
        .unwrap()
        .to_string()
}

async fn api_key_required(gw: &aws_sdk_apigateway::Client, api: &str) -> bool {
    let r = webhook_resource(gw, api).await;
    gw.get_method()
        .rest_api_id(api)
        .resource_id(r)
        .http_method("POST")
        .send()
        .await
        .unwrap()
        .api_key_required()
        .unwrap()
}

async fn alarms(
    cw: &aws_sdk_cloudwatch::Client,
) -> BTreeMap<String, aws_sdk_cloudwatch::types::MetricAlarm> {
    let out = cw.describe_alarms().send().await.unwrap();
    out.metric_alarms()
        .iter()
        .map(|a| (a.alarm_name().unwrap().to_string(), a.clone()))
        .collect()
}

async fn email_subscriptions(sns: &aws_sdk_sns::Client) -> Vec<String> {
    let subs = sns
        .list_subscriptions_by_topic()
        .topic_arn(TOPIC_ARN)
        .send()
        .await
        .unwrap();
    subs.subscriptions()
        .iter()
        .filter(|s| s.protocol() == Some("email"))
        .map(|s| s.endpoint().unwrap().to_string())
        .collect()
}

/// (namespace, metric, stat, period, sorted dimensions) of a query.
fn stat_of(
    q: &aws_sdk_cloudwatch::types::MetricDataQuery,
) -> (String, String, String, i32, Vec<(String, String)>) {
    let ms = q
        .metric_stat()
        .unwrap_or_else(|| panic!("{q:?} has no metric"));
    let m = ms.metric().unwrap();
    let mut dims: Vec<(String, String)> = m
        .dimensions()
        .iter()
        .map(|d| {
            (
                d.name().unwrap().to_string(),
                d.value().unwrap().to_string(),
            )
        })
        .collect();
    dims.sort();
    (
        m.namespace().unwrap().to_string(),
        m.metric_name().unwrap().to_string(),
        ms.stat().unwrap().to_string(),
        ms.period().unwrap(),
        dims,
    )
}

fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks what every alarm shares: notify the topic, missing data not breaching.
fn assert_notifies_topic(a: &aws_sdk_cloudwatch::types::MetricAlarm) {
    let name = a.alarm_name().unwrap();
    assert_eq!(a.alarm_actions(), [TOPIC_ARN.to_string()], "{name}");
    assert_eq!(a.treat_missing_data(), Some("notBreaching"), "{name}");
    assert_eq!(a.actions_enabled(), Some(true), "{name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn alarms_notify_the_topic_and_the_email_subscription_follows_the_flag() {
    let env = start();
    let t = Instant::now();
    up(&env, &["--alarm-email", EMAIL]);
    eprintln!(
        "first up: {:.1}s, {} calls",
        t.elapsed().as_secs_f64(),
        env.proxy.calls().len()
    );
    let conf = env.sdk().await;

    let sns = aws_sdk_sns::Client::new(&conf);
    sns.get_topic_attributes()
        .topic_arn(TOPIC_ARN)
        .send()
        .await
        .expect("alarm topic");
    let tags = sns
        .list_tags_for_resource()
        .resource_arn(TOPIC_ARN)
        .send()
        .await
        .unwrap();
    assert!(tags
        .tags()
        .iter()
        .any(|t| t.key() == "webhook-deploy:stack" && t.value() == SUFFIX));
    assert_eq!(email_subscriptions(&sns).await, vec![EMAIL.to_string()]);

    let cw = aws_sdk_cloudwatch::Client::new(&conf);
    let all = alarms(&cw).await;
    for f in [RECEIVER, "event-processor-t5", "dead-letter-handler-t5"] {
        let a = all
            .get(&format!("{}-error-rate-t5", f.trim_end_matches("-t5")))
            .unwrap_or_else(|| panic!("no error-rate alarm for {f}: {:?}", all.keys()));
        assert_notifies_topic(a);
        let q = a.metrics();
        assert_eq!(q.len(), 3, "{q:?}");
        let by_id: BTreeMap<&str, _> = q.iter().map(|q| (q.id().unwrap(), q)).collect();
        let fdims = dims(&[("FunctionName", f)]);
        assert_eq!(
            stat_of(by_id["errors"]),
            (
                "AWS/Lambda".into(),
                "Errors".into(),
                "Sum".into(),
                300,
                fdims.clone()
            )
        );
        assert_eq!(
            stat_of(by_id["invocations"]),
            (
                "AWS/Lambda".into(),
                "Invocations".into(),
                "Sum".into(),
                300,
                fdims
            )
        );
        assert_eq!(
            by_id["error_rate"].expression(),
            Some("100 * errors / invocations")
        );
        assert_ne!(
            by_id["errors"].return_data(),
            Some(true),
            "only the rate is evaluated"
        );
        assert_ne!(
            by_id["invocations"].return_data(),
            Some(true),
            "only the rate is evaluated"
        );
        assert_eq!(a.threshold(), Some(1.0));
        assert_eq!(
            a.comparison_operator().unwrap().as_str(),
            "GreaterThanThreshold"
        );
        assert_eq!(a.evaluation_periods(), Some(1));
    }
    let single = |name: &str| {
        let a = all
            .get(name)
            .unwrap_or_else(|| panic!("no alarm {name}: {:?}", all.keys()));
        assert_notifies_topic(a);
        assert_eq!(a.metrics().len(), 1, "{name}");
        (
            stat_of(&a.metrics()[0]),
            a.threshold().unwrap(),
            a.comparison_operator().unwrap().as_str().to_string(),
        )
    };
    assert_eq!(
        single("event-processor-iterator-age-t5"),
        (
            (
                "AWS/Lambda".into(),
                "IteratorAge".into(),
                "Maximum".into(),
                300,
                dims(&[("FunctionName", "event-processor-t5")])
            ),
            300_000.0,
            "GreaterThanThreshold".into()
        )
    );
    assert_eq!(
        single("webhook-dead-letters-t5"),
        (
            (
                "WebhookPipeline".into(),
                "DeadLetterEvents".into(),
                "Sum".into(),
                300,
                dims(&[("FunctionName", "dead-letter-handler-t5")])
            ),
            0.0,
            "GreaterThanThreshold".into()
        )
    );
    assert_eq!(
        single("webhook-api-5xx-t5"),
        (
            (
                "AWS/ApiGateway".into(),
                "5XXError".into(),
                "Sum".into(),
                300,
                dims(&[("ApiName", API_NAME), ("Stage", "prod")])
            ),
            0.0,
            "GreaterThanThreshold".into()
        )
    );
    let arn = all["webhook-api-5xx-t5"].alarm_arn().unwrap().to_string();
    let atags = cw
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    assert!(atags
        .tags()
        .iter()
        .any(|t| t.key() == Some("webhook-deploy:resource") && t.value() == Some("api-5xx-alarm")));

    // Same flags again: nothing to do.
    env.proxy.clear();
    let t = Instant::now();
    up(&env, &["--alarm-email", EMAIL]);
    eprintln!(
        "no-op up: {:.1}s, {} calls",
        t.elapsed().as_secs_f64(),
        env.proxy.calls().len()
    );
    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "no-op up mutated: {m:#?}");

    // The address stays until --no-alarm-email removes it; giving one
    // again adds it.
    let plan = run(&env, &["plan"]);
    assert_eq!(plan.code, 0, "a recorded setting is no change: {plan:?}");
    let plan = run(&env, &["plan", "--no-alarm-email"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("alarm_email"), "{plan:?}");
    up(&env, &["--no-alarm-email"]);
    assert!(email_subscriptions(&sns).await.is_empty());
    up(&env, &[]);
    assert!(email_subscriptions(&sns).await.is_empty());
    up(&env, &["--alarm-email", "other@example.com"]);
    assert_eq!(
        email_subscriptions(&sns).await,
        vec!["other@example.com".to_string()]
    );

    // Drift on an alarm is found and repaired.
    cw.put_metric_alarm()
        .alarm_name("webhook-dead-letters-t5")
        .namespace("WebhookPipeline")
        .metric_name("DeadLetterEvents")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(100.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    let status = run(&env, &["status", "--alarm-email", "other@example.com"]);
    assert_eq!(status.code, 2, "{status:?}");
    assert!(status.stdout.contains("dead-letter-alarm"), "{status:?}");
    up(&env, &["--alarm-email", "other@example.com"]);
    let a = alarms(&cw).await.remove("webhook-dead-letters-t5").unwrap();
    assert_eq!(a.threshold(), Some(0.0));
    assert_notifies_topic(&a);

    let down = run(&env, &["down", "--yes"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        alarms(&cw).await.is_empty(),
        "alarms left: {:?}",
        alarms(&cw).await.keys()
    );
    assert!(
        sns.get_topic_attributes()
            .topic_arn(TOPIC_ARN)
            .send()
            .await
            .is_err(),
        "topic left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_is_built_with_every_setting_and_keeps_its_key_secret() {
    let env = start();
    let t = Instant::now();
    let up = up(&env, &[]);
    eprintln!(
        "first up: {:.1}s, {} calls",
        t.elapsed().as_secs_f64(),
        env.proxy.calls().len()
    );
    let conf = env.sdk().await;
    let gw = aws_sdk_apigateway::Client::new(&conf);
    let api = api_id(&gw).await.expect("REST API");

    let a = gw.get_rest_api().rest_api_id(&api).send().await.unwrap();
    let types: Vec<&str> = a
        .endpoint_configuration()
        .unwrap()
        .types()
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types, ["REGIONAL"]);
    assert_eq!(a.tags().unwrap()["webhook-deploy:stack"], SUFFIX);
    assert_eq!(a.tags().unwrap()["Name"], API_NAME);

    // POST /webhook: API key required, AWS_PROXY to the receiver.
    let r = webhook_resource(&gw, &api).await;
    let m = gw
        .get_method()
        .rest_api_id(&api)
        .resource_id(&r)
        .http_method("POST")
        .send()
        .await
        .unwrap();
    assert_eq!(m.api_key_required(), Some(true));
    assert_eq!(m.authorization_type(), Some("NONE"));
    let i = m.method_integration().unwrap();
    assert_eq!(i.r#type().unwrap().as_str(), "AWS_PROXY");
    assert_eq!(i.http_method(), Some("POST"));
    let receiver_arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{RECEIVER}");
    assert_eq!(
        i.uri(),
        Some(format!("arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{receiver_arn}/invocations").as_str())
    );

    // The receiver lets exactly this method invoke it.
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let policy: Value = serde_json::from_str(
        lambda
            .get_policy()
            .function_name(RECEIVER)
            .send()
            .await
            .unwrap()
            .policy()
            .unwrap(),
    )
    .unwrap();
    let st = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["Principal"]["Service"] == "apigateway.amazonaws.com"
                || s["Principal"] == "apigateway.amazonaws.com"
        })
        .unwrap_or_else(|| panic!("no API Gateway statement: {policy}"));
    assert_eq!(
        st["Condition"]["ArnLike"]["AWS:SourceArn"],
        format!("arn:aws:execute-api:{REGION}:{ACCOUNT}:{api}/*/POST/webhook")
    );

    // Stage prod: one deployment, X-Ray, */* throttling and metrics.
    let deployments = deployment_ids(&gw, &api).await;
    assert_eq!(deployments.len(), 1, "{deployments:?}");
    let s = gw
        .get_stage()
        .rest_api_id(&api)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    assert_eq!(s.deployment_id(), Some(deployments[0].as_str()));
    assert!(s.tracing_enabled());
    let all = &s.method_settings().unwrap()["*/*"];
    assert_eq!(all.throttling_rate_limit(), 10000.0);
    assert_eq!(all.throttling_burst_limit(), 5000);
    assert!(all.metrics_enabled());
    let d = gw
        .get_deployment()
        .rest_api_id(&api)
        .deployment_id(&deployments[0])
        .send()
        .await
        .unwrap();
    assert!(
        d.description()
            .unwrap()
            .starts_with("webhook-deploy definition "),
        "{d:?}"
    );

    // Usage plan on the stage with the same throttle, holding the key.
    let plans = gw.get_usage_plans().send().await.unwrap();
    let plan = plans
        .items()
        .iter()
        .find(|p| p.name() == Some("webhook-usage-plan-t5"))
        .expect("usage plan");
    let stages: Vec<(&str, &str)> = plan
        .api_stages()
        .iter()
        .map(|s| (s.api_id().unwrap(), s.stage().unwrap()))
        .collect();
    assert_eq!(stages, [(api.as_str(), "prod")]);
    assert_eq!(plan.throttle().unwrap().rate_limit(), 10000.0);
    assert_eq!(plan.throttle().unwrap().burst_limit(), 5000);
    let keys = gw
        .get_api_keys()
        .name_query("webhook-api-key-t5")
        .include_values(true)
        .send()
        .await
        .unwrap();
    let key = &keys.items()[0];
    assert!(key.enabled());
    let key_id = key.id().unwrap().to_string();
    let key_value = key.value().unwrap().to_string();
    let members = gw
        .get_usage_plan_keys()
        .usage_plan_id(plan.id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        members
            .items()
            .iter()
            .map(|k| k.id().unwrap())
            .collect::<Vec<_>>(),
        [key_id.as_str()]
    );

    // Outputs: the real URL, the key id; the key's value nowhere without asking.
    let url = format!("https://{api}.execute-api.{REGION}.amazonaws.com/prod/webhook");
    assert!(up.stdout.contains(&format!("apiUrl = {url}")), "{up:?}");
    assert!(up.stdout.contains("curl -sS -X POST"), "{up:?}");
    assert!(
        !up.stdout.contains(&key_value) && !up.stderr.contains(&key_value),
        "up printed the API key value"
    );
    let o = run(&env, &["outputs", "--output", "json"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!o.stdout.contains(&key_value), "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["apiUrl"], url);
    assert_eq!(v["apiKeyId"], key_id);
    assert_eq!(v["tableName"], "webhook-events-t5");
    assert_eq!(v["bucketName"], "webhook-archive-t5-123456789012-us-east-1");
    assert!(
        v.get("apiKeyValue").is_none() && v.get("signingSecret").is_none(),
        "{v}"
    );
    assert_eq!(v["signatureScheme"], "standard-webhooks");
    let text = run(&env, &["outputs"]);
    assert!(!text.stdout.contains(&key_value), "{text:?}");
    let secret = run(&env, &["outputs", "--output", "json", "--show-secrets"]);
    assert_eq!(secret.code, 0, "{secret:?}");
    let v: Value = serde_json::from_str(&secret.stdout).unwrap();
    assert_eq!(v["apiKeyValue"], key_value);
    let signing_secret = v["signingSecret"]
        .as_str()
        .expect("the generated signing secret")
        .to_string();
    assert!(signing_secret.starts_with("whsec_"), "{v}");
    assert!(!up.stdout.contains(&signing_secret) && !o.stdout.contains(&signing_secret));
    assert!(
        !state_text(&env).contains(&key_value),
        "the state file holds the API key value"
    );
    assert!(
        !state_text(&env).contains(&signing_secret),
        "the state file holds the signing secret"
    );

    let status = run(&env, &["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        !state_text(&env).contains(&key_value),
        "the state file holds the API key value"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploys_exactly_once_per_definition_change_and_never_on_a_noop() {
    let env = start();
    up(&env, &[]);
    let conf = env.sdk().await;
    let gw = aws_sdk_apigateway::Client::new(&conf);
    let api = api_id(&gw).await.unwrap();
    let first = stage_deployment(&gw, &api).await;

    env.proxy.clear();
    let t = Instant::now();
    up(&env, &[]);
    eprintln!(
        "no-op up: {:.1}s, {} calls",
        t.elapsed().as_secs_f64(),
        env.proxy.calls().len()
    );
    let m = env.proxy.mutating_calls();
    assert!(m.is_empty(), "no-op up mutated: {m:#?}");
    assert_eq!(deployment_ids(&gw, &api).await, [first.as_str()]);

    // --no-api-key changes the definition: the method flips, one new
    // deployment, the stage moves to it, the old one is removed.
    let plan = run(&env, &["plan", "--no-api-key"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("api_key_required"), "{plan:?}");
    env.proxy.clear();
    up(&env, &["--no-api-key"]);
    assert_eq!(
        create_deployment_calls(&env.proxy),
        1,
        "{:#?}",
        env.proxy.mutating_calls()
    );
    assert!(!api_key_required(&gw, &api).await);
    let second = stage_deployment(&gw, &api).await;
    assert_ne!(second, first);
    assert_eq!(deployment_ids(&gw, &api).await, [second.as_str()]);
    let o: Value =
        serde_json::from_str(&run(&env, &["outputs", "--output", "json"]).stdout).unwrap();
    assert_eq!(o["apiKeyRequired"], false);

    // The same flag again is a no-op.
    env.proxy.clear();
    up(&env, &["--no-api-key"]);
    assert!(
        env.proxy.mutating_calls().is_empty(),
        "{:#?}",
        env.proxy.mutating_calls()
    );

    // Back to requiring the key, with API Gateway throttling the
    // CreateDeployment call twice: backed off, still exactly one deployment.
    env.proxy.add_rule(Rule::fail(
        Matcher::custom(|r| {
            r.service == "apigateway"
                && r.method == "POST"
                && r.path_and_query.ends_with("/deployments")
        }),
        2,
        429,
        "TooManyRequestsException",
        "Too Many Requests",
    ));
    env.proxy.clear();
    up(&env, &["--api-key"]);
    assert_eq!(env.proxy.injected_calls().len(), 2);
    assert!(api_key_required(&gw, &api).await);
    let third = stage_deployment(&gw, &api).await;
    assert_eq!(deployment_ids(&gw, &api).await, [third.as_str()]);
    assert!(third != first && third != second);

    // The integration changed behind the deployment's back (a stage serving
    // an older definition): exactly one new deployment, the stage moves.
    let r = webhook_resource(&gw, &api).await;
    gw.put_integration()
        .rest_api_id(&api)
        .resource_id(&r)
        .http_method("POST")
        .r#type(aws_sdk_apigateway::types::IntegrationType::AwsProxy)
        .integration_http_method("POST")
        .uri(format!("arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/arn:aws:lambda:{REGION}:{ACCOUNT}:function:other/invocations"))
        .send()
        .await
        .unwrap();
    let old = gw
        .create_deployment()
        .rest_api_id(&api)
        .description("webhook-deploy definition 0000000000000000")
        .send()
        .await
        .unwrap();
    let old = old.id().unwrap().to_string();
    gw.update_stage()
        .rest_api_id(&api)
        .stage_name("prod")
        .patch_operations(
            aws_sdk_apigateway::types::PatchOperation::builder()
                .op(aws_sdk_apigateway::types::Op::Replace)
                .path("/deploymentId")
                .value(&old)
                .build(),
        )
        .send()
        .await
        .unwrap();
    gw.delete_deployment()
        .rest_api_id(&api)
        .deployment_id(&third)
        .send()
        .await
        .unwrap();
    let status = run(&env, &["status"]);
    assert_eq!(status.code, 2, "{status:?}");
    assert!(status.stdout.contains("integration_uri"), "{status:?}");
    env.proxy.clear();
    up(&env, &[]);
    assert_eq!(
        create_deployment_calls(&env.proxy),
        1,
        "{:#?}",
        env.proxy.mutating_calls()
    );
    let fourth = stage_deployment(&gw, &api).await;
    assert_ne!(fourth, old);
    assert_eq!(
        deployment_ids(&gw, &api).await,
        [fourth],
        "the older deployment was not cleaned up"
    );
    let m = gw
        .get_method()
        .rest_api_id(&api)
        .resource_id(&r)
        .http_method("POST")
        .send()
        .await
        .unwrap();
    assert!(m
        .method_integration()
        .unwrap()
        .uri()
        .unwrap()
        .contains(RECEIVER));

    // Full request/response logging would put payloads in CloudWatch: on
    // the whole stage, or through one method's own settings, it is drift,
    // and `up` turns it off again.
    for (methods, drift) in [
        ("*/*", "data_trace_enabled"),
        ("webhook/POST", "method_data_trace"),
    ] {
        gw.update_stage()
            .rest_api_id(&api)
            .stage_name("prod")
            .patch_operations(
                aws_sdk_apigateway::types::PatchOperation::builder()
                    .op(aws_sdk_apigateway::types::Op::Replace)
                    .path(format!("/{methods}/logging/dataTrace"))
                    .value("true")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let status = run(&env, &["status"]);
        assert_eq!(status.code, 2, "{status:?}");
        assert!(status.stdout.contains(drift), "{status:?}");
        up(&env, &[]);
        let stage = gw
            .get_stage()
            .rest_api_id(&api)
            .stage_name("prod")
            .send()
            .await
            .unwrap();
        let settings = &stage.method_settings().unwrap()[methods];
        assert!(!settings.data_trace_enabled(), "{stage:?}");
        assert_eq!(run(&env, &["status"]).code, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttle_flags_reach_the_stage_and_the_usage_plan() {
    let env = start();
    up(&env, &[]);
    env.proxy.clear();
    up(&env, &["--throttle-rate", "50", "--throttle-burst", "20"]);
    assert_eq!(
        create_deployment_calls(&env.proxy),
        0,
        "throttling is stage configuration, not a new deployment"
    );
    let conf = env.sdk().await;
    let gw = aws_sdk_apigateway::Client::new(&conf);
    let api = api_id(&gw).await.unwrap();
    let s = gw
        .get_stage()
        .rest_api_id(&api)
        .stage_name("prod")
        .send()
        .await
        .unwrap();
    let all = &s.method_settings().unwrap()["*/*"];
    assert_eq!(
        (all.throttling_rate_limit(), all.throttling_burst_limit()),
        (50.0, 20)
    );
    let plans = gw.get_usage_plans().send().await.unwrap();
    let t = plans.items()[0].throttle().unwrap();
    assert_eq!((t.rate_limit(), t.burst_limit()), (50.0, 20));
    let bad = run(&env, &["plan", "--throttle-rate", "0"]);
    assert_eq!(bad.code, 1, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn down_removes_the_api_usage_plan_key_alarms_and_topic() {
    let env = start();
    up(&env, &["--alarm-email", EMAIL]);
    let conf = env.sdk().await;
    let gw = aws_sdk_apigateway::Client::new(&conf);
    assert_eq!(
        support::inventory::count_tagged(&conf, SUFFIX).await,
        support::inventory::one_stack_with(false)
    );
    let api = api_id(&gw).await.expect("the API exists");
    env.proxy.clear();
    let t = Instant::now();
    let down = run(&env, &["down", "--yes", "--output", "json"]);
    eprintln!(
        "down: {:.1}s, {} calls",
        t.elapsed().as_secs_f64(),
        env.proxy.calls().len()
    );
    assert_eq!(down.code, 0, "{down:?}");
    assert!(api_id(&gw).await.is_none(), "REST API left");
    // DeleteRestApi takes the route, method, deployment and stage along:
    // no call of their own (API Gateway's control plane is rate-limited),
    // yet each is reported deleted, after the API.
    let api_deletes: Vec<String> = env
        .proxy
        .calls()
        .into_iter()
        .filter(|c| c.service == "apigateway" && c.operation.starts_with("DELETE /restapis"))
        .map(|c| c.operation)
        .collect();
    assert_eq!(api_deletes, vec![format!("DELETE /restapis/{api}")]);
    let report: Value = serde_json::from_str(&down.stdout).unwrap();
    let entry = |id: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in {report:#}"))
    };
    let api_entry = entry("api");
    let api_done = api_entry["started"].as_f64().unwrap() + api_entry["seconds"].as_f64().unwrap();
    for id in [
        "api-webhook-resource",
        "api-webhook-post",
        "api-deployment",
        "api-stage",
    ] {
        let e = entry(id);
        assert_eq!(e["action"], "delete", "{e:#}");
        assert!(
            e["physical_id"].as_str().is_some_and(|p| !p.is_empty()),
            "{e:#}"
        );
        assert_eq!(e["depends_on"], serde_json::json!(["api"]), "{e:#}");
        assert!(e["started"].as_f64().unwrap() >= api_done - 1e-3, "{e:#}");
    }
    // The API goes once the usage plan no longer names its stage.
    let waited = api_entry["depends_on"].as_array().unwrap();
    assert!(
        waited.iter().any(|d| d == "api-usage-plan"),
        "{api_entry:#}"
    );
    assert!(
        gw.get_usage_plans()
            .send()
            .await
            .unwrap()
            .items()
            .is_empty(),
        "usage plan left"
    );
    assert!(
        gw.get_api_keys().send().await.unwrap().items().is_empty(),
        "API key left"
    );
    let cw = aws_sdk_cloudwatch::Client::new(&conf);
    assert!(alarms(&cw).await.is_empty());
    let sns = aws_sdk_sns::Client::new(&conf);
    assert!(
        sns.list_topics().send().await.unwrap().topics().is_empty(),
        "topic left"
    );
    assert_eq!(
        support::inventory::count_tagged(&conf, SUFFIX).await,
        support::inventory::nothing()
    );
    let again = run(&env, &["down", "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("0 deleted"), "{again:?}");
}

/// Every ARN a policy names, however the statement spells `Resource`.
fn policy_arns(doc: &str) -> Vec<String> {
    let doc = urlencoding::decode(doc)
        .map(|d| d.into_owned())
        .unwrap_or(doc.to_string());
    let v: Value = serde_json::from_str(&doc).unwrap();
    let mut out = Vec::new();
    for st in v["Statement"].as_array().unwrap() {
        let r = &st["Resource"];
        let all = r.as_array().cloned().unwrap_or_else(|| vec![r.clone()]);
        out.extend(
            all.iter()
                .filter_map(|a| a.as_str())
                .filter(|a| a.starts_with("arn:"))
                .map(String::from),
        );
    }
    out
}

/// In the China (and GovCloud) partitions an `arn:aws:` ARN matches
/// nothing: the policies, the integration, the permission's source and the
/// invoke URL carry the account's own partition, and nothing drifts.
#[tokio::test(flavor = "multi_thread")]
async fn a_stack_in_the_china_partition_names_everything_in_that_partition() {
    const CN: &str = "cn-north-1";
    let env = start();
    let out = env.run(&["up", "--region", CN]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!(".execute-api.{CN}.amazonaws.com.cn/prod/webhook")),
        "{out:?}"
    );
    let conf = support::sdk_config_in(&env.moto.endpoint, CN).await;

    let iam = aws_sdk_iam::Client::new(&conf);
    let mut arns = Vec::new();
    for role in [
        "webhook-receiver-role-t5",
        "event-processor-role-t5",
        "dead-letter-handler-role-t5",
    ] {
        let names = iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .unwrap();
        for name in names.policy_names() {
            let p = iam
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .unwrap();
            arns.extend(policy_arns(p.policy_document()));
        }
    }
    assert!(arns.len() >= 6, "{arns:?}");
    let foreign: Vec<_> = arns
        .iter()
        .filter(|a| !a.starts_with("arn:aws-cn:"))
        .collect();
    assert!(foreign.is_empty(), "ARNs outside aws-cn: {foreign:?}");

    let gw = aws_sdk_apigateway::Client::new(&conf);
    let api = api_id(&gw).await.expect("the API exists");
    let res = webhook_resource(&gw, &api).await;
    let integration = gw
        .get_integration()
        .rest_api_id(&api)
        .resource_id(&res)
        .http_method("POST")
        .send()
        .await
        .unwrap();
    let uri = integration.uri().unwrap_or_default();
    assert!(
        uri.starts_with(&format!("arn:aws-cn:apigateway:{CN}:lambda:path/"))
            && uri.contains(&format!(
                "arn:aws-cn:lambda:{CN}:{ACCOUNT}:function:{RECEIVER}"
            )),
        "{uri}"
    );
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let policy = lambda
        .get_policy()
        .function_name(RECEIVER)
        .send()
        .await
        .unwrap();
    assert!(
        policy
            .policy()
            .unwrap_or_default()
            .contains(&format!("arn:aws-cn:execute-api:{CN}:{ACCOUNT}:{api}/")),
        "{policy:?}"
    );

    let status = env.run(&["status", "--region", CN]);
    assert_eq!(status.code, 0, "{status:?}");
    let down = env.run(&["down", "--yes", "--region", CN]);
    assert_eq!(down.code, 0, "{down:?}");
    // The API's stage went with the API, and the progress says so.
    assert!(
        down.stderr
            .lines()
            .any(|l| l.contains("api-stage") && l.contains("deleted with api")),
        "{down:?}"
    );
}
