//! Counts what exists in the emulator and carries the stack's tag, by kind:
//! the ground truth for "no duplicates" and "nothing left".

use std::collections::BTreeMap;

pub async fn count_tagged(
    conf: &aws_config::SdkConfig,
    suffix: &str,
) -> BTreeMap<&'static str, usize> {
    let is_ours = |k: &str, v: &str| k == "webhook-deploy:stack" && v == suffix;
    let ddb = aws_sdk_dynamodb::Client::new(conf);
    let mut tables = 0;
    for t in ddb.list_tables().send().await.unwrap().table_names() {
        let arn = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{t}");
        let tags = ddb
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        tables += tags.tags().iter().any(|x| is_ours(x.key(), x.value())) as usize;
    }
    let s3 = super::s3_client(conf);
    let mut buckets = 0;
    for b in s3.list_buckets().send().await.unwrap().buckets() {
        if let Ok(t) = s3
            .get_bucket_tagging()
            .bucket(b.name().unwrap())
            .send()
            .await
        {
            buckets += t.tag_set().iter().any(|x| is_ours(x.key(), x.value())) as usize;
        }
    }
    let logs = aws_sdk_cloudwatchlogs::Client::new(conf);
    let mut groups = 0;
    for g in logs
        .describe_log_groups()
        .send()
        .await
        .unwrap()
        .log_groups()
    {
        let arn = g.arn().unwrap().trim_end_matches(":*").to_string();
        let t = logs
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        groups += t
            .tags()
            .is_some_and(|m| m.iter().any(|(k, v)| is_ours(k, v))) as usize;
    }
    let iam = aws_sdk_iam::Client::new(conf);
    let mut roles = 0;
    for r in iam.list_roles().send().await.unwrap().roles() {
        let t = iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await
            .unwrap();
        roles += t.tags().iter().any(|x| is_ours(x.key(), x.value())) as usize;
    }
    let gw = aws_sdk_apigateway::Client::new(conf);
    let tagged = |t: Option<&std::collections::HashMap<String, String>>| {
        t.is_some_and(|m| m.iter().any(|(k, v)| is_ours(k, v))) as usize
    };
    let rest_apis = gw
        .get_rest_apis()
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|a| tagged(a.tags()))
        .sum();
    let usage_plans = gw
        .get_usage_plans()
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|p| tagged(p.tags()))
        .sum();
    let api_keys = gw
        .get_api_keys()
        .send()
        .await
        .unwrap()
        .items()
        .iter()
        .map(|k| tagged(k.tags()))
        .sum();
    let cw = aws_sdk_cloudwatch::Client::new(conf);
    let mut alarms = 0;
    for a in cw.describe_alarms().send().await.unwrap().metric_alarms() {
        let t = cw
            .list_tags_for_resource()
            .resource_arn(a.alarm_arn().unwrap())
            .send()
            .await
            .unwrap();
        alarms += t
            .tags()
            .iter()
            .any(|x| is_ours(x.key().unwrap_or_default(), x.value().unwrap_or_default()))
            as usize;
    }
    let sns = aws_sdk_sns::Client::new(conf);
    let mut topics = 0;
    for tp in sns.list_topics().send().await.unwrap().topics() {
        let t = sns
            .list_tags_for_resource()
            .resource_arn(tp.topic_arn().unwrap())
            .send()
            .await
            .unwrap();
        topics += t.tags().iter().any(|x| is_ours(x.key(), x.value())) as usize;
    }
    let mut counts = BTreeMap::from([
        ("tables", tables),
        ("buckets", buckets),
        ("log_groups", groups),
        ("roles", roles),
        ("rest_apis", rest_apis),
        ("usage_plans", usage_plans),
        ("api_keys", api_keys),
        ("alarms", alarms),
        ("topics", topics),
    ]);
    counts.extend(count_compute(conf, suffix).await);
    counts
}

/// The network (EC2) and compute (Lambda) part of [`count_tagged`].
async fn count_compute(
    conf: &aws_config::SdkConfig,
    suffix: &str,
) -> BTreeMap<&'static str, usize> {
    let ours = || {
        aws_sdk_ec2::types::Filter::builder()
            .name("tag:webhook-deploy:stack")
            .values(suffix)
            .build()
    };
    let ec2 = aws_sdk_ec2::Client::new(conf);
    let vpcs = ec2
        .describe_vpcs()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .vpcs()
        .len();
    let subnets = ec2
        .describe_subnets()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .subnets()
        .len();
    let route_tables = ec2
        .describe_route_tables()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .route_tables()
        .len();
    let security_groups = ec2
        .describe_security_groups()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .security_groups()
        .len();
    let endpoints = ec2
        .describe_vpc_endpoints()
        .filters(ours())
        .send()
        .await
        .unwrap()
        .vpc_endpoints()
        .iter()
        .filter(|e| {
            e.state()
                .map(|s| s.as_str().to_ascii_lowercase())
                .as_deref()
                != Some("deleted")
        })
        .count();
    let lambda = aws_sdk_lambda::Client::new(conf);
    let tagged = |t: Option<&std::collections::HashMap<String, String>>| {
        t.is_some_and(|m| m.get("webhook-deploy:stack").map(String::as_str) == Some(suffix))
            as usize
    };
    let mut functions = 0;
    for f in lambda.list_functions().send().await.unwrap().functions() {
        let t = lambda
            .list_tags()
            .resource(f.function_arn().unwrap())
            .send()
            .await
            .unwrap();
        functions += tagged(t.tags());
    }
    let mut mappings = 0;
    for m in lambda
        .list_event_source_mappings()
        .send()
        .await
        .unwrap()
        .event_source_mappings()
    {
        let t = lambda
            .list_tags()
            .resource(m.event_source_mapping_arn().unwrap())
            .send()
            .await
            .unwrap();
        mappings += tagged(t.tags());
    }
    BTreeMap::from([
        ("vpcs", vpcs),
        ("subnets", subnets),
        ("route_tables", route_tables),
        ("security_groups", security_groups),
        ("endpoints", endpoints),
        ("functions", functions),
        ("mappings", mappings),
    ])
}

/// What one deployed stack holds (with its VPC), as `count_tagged` reports it.
pub fn one_stack() -> BTreeMap<&'static str, usize> {
    one_stack_with(true)
}

/// What one deployed stack holds, with or without (`--no-vpc`) its network.
pub fn one_stack_with(vpc: bool) -> BTreeMap<&'static str, usize> {
    let n = |k: usize| if vpc { k } else { 0 };
    BTreeMap::from([
        ("vpcs", n(1)),
        ("subnets", n(2)),
        ("route_tables", n(1)),
        ("security_groups", n(1)),
        ("endpoints", n(2)),
        ("functions", 3),
        ("mappings", 1),
        ("tables", 1),
        ("buckets", 1),
        ("log_groups", 3),
        ("roles", 3),
        ("rest_apis", 1),
        ("usage_plans", 1),
        ("api_keys", 1),
        ("alarms", 6),
        ("topics", 1),
    ])
}

pub fn nothing() -> BTreeMap<&'static str, usize> {
    one_stack().into_keys().map(|k| (k, 0)).collect()
}
