//! Self-tests of the integration-test harness (`tests/support`) against a real moto server.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use support::moto::Moto;
use support::proxy::{Call, Proxy, Rule};

const TRUST_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

fn call(service: &str, operation: &str, mutating: bool, status: u16) -> Call {
    Call {
        service: service.into(),
        operation: operation.into(),
        mutating,
        status,
    }
}

async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<
    aws_sdk_dynamodb::operation::create_table::CreateTableOutput,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::create_table::CreateTableError>,
> {
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
}

#[tokio::test]
async fn moto_starts_and_answers() {
    let moto = Moto::start();
    assert!(moto.endpoint.starts_with("http://"), "{}", moto.endpoint);
    let conf = support::sdk_config(&moto.endpoint).await;
    let sts = aws_sdk_sts::Client::new(&conf);
    let id = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(id.account(), Some(support::TEST_ACCOUNT_ID));
}

#[tokio::test]
async fn proxy_forwards_and_records_json_protocol() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);

    create_table(&ddb, "selftest").await.unwrap();
    let tables = ddb.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["selftest".to_string()]);

    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    logs.create_log_group()
        .log_group_name("/selftest")
        .send()
        .await
        .unwrap();
    logs.describe_log_groups().send().await.unwrap();

    assert_eq!(
        proxy.calls(),
        vec![
            call("dynamodb", "CreateTable", true, 200),
            call("dynamodb", "ListTables", false, 200),
            call("logs", "CreateLogGroup", true, 200),
            call("logs", "DescribeLogGroups", false, 200),
        ]
    );
    assert_eq!(
        proxy.mutating_calls(),
        vec![
            call("dynamodb", "CreateTable", true, 200),
            call("logs", "CreateLogGroup", true, 200),
        ]
    );
    proxy.clear();
    assert!(proxy.calls().is_empty());
}

/// The benchmark gives some services an emulator of their own: the proxy
/// sends their calls there and everything else to the default upstream.
#[tokio::test]
async fn proxy_routes_a_service_to_its_own_emulator() {
    let main = Moto::start();
    let own = Moto::start_own();
    assert_ne!(main.endpoint, own.endpoint);
    let proxy = Proxy::start(&main.endpoint);
    proxy.route("logs", &own.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    create_table(&aws_sdk_dynamodb::Client::new(&conf), "routed")
        .await
        .unwrap();
    aws_sdk_cloudwatchlogs::Client::new(&conf)
        .create_log_group()
        .log_group_name("/routed")
        .send()
        .await
        .unwrap();

    let groups = |endpoint: String| async move {
        let conf = support::sdk_config(&endpoint).await;
        let out = aws_sdk_cloudwatchlogs::Client::new(&conf)
            .describe_log_groups()
            .send()
            .await
            .unwrap();
        out.log_groups()
            .iter()
            .filter_map(|g| g.log_group_name().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let tables = |endpoint: String| async move {
        let conf = support::sdk_config(&endpoint).await;
        let out = aws_sdk_dynamodb::Client::new(&conf)
            .list_tables()
            .send()
            .await
            .unwrap();
        out.table_names().to_vec()
    };
    assert_eq!(groups(own.endpoint.clone()).await, ["/routed"]);
    assert!(groups(main.endpoint.clone()).await.is_empty());
    assert_eq!(tables(main.endpoint.clone()).await, ["routed"]);
    assert!(tables(own.endpoint.clone()).await.is_empty());
    assert_eq!(
        proxy.calls(),
        vec![
            call("dynamodb", "CreateTable", true, 200),
            call("logs", "CreateLogGroup", true, 200),
        ]
    );
}

#[tokio::test]
async fn proxy_forwards_and_records_query_protocol() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let iam = aws_sdk_iam::Client::new(&conf);
    let sts = aws_sdk_sts::Client::new(&conf);

    iam.create_role()
        .role_name("selftest-role")
        .assume_role_policy_document(TRUST_POLICY)
        .send()
        .await
        .unwrap();
    let role = iam
        .get_role()
        .role_name("selftest-role")
        .send()
        .await
        .unwrap();
    assert_eq!(role.role().unwrap().role_name(), "selftest-role");
    sts.get_caller_identity().send().await.unwrap();

    assert_eq!(
        proxy.calls(),
        vec![
            call("iam", "CreateRole", true, 200),
            call("iam", "GetRole", false, 200),
            call("sts", "GetCallerIdentity", false, 200),
        ]
    );
}

#[tokio::test]
async fn proxy_forwards_and_records_s3_rest_protocol() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let s3 = support::s3_client(&conf);

    s3.create_bucket()
        .bucket("selftest-bucket")
        .send()
        .await
        .unwrap();
    let body = b"hello \x00\xff bytes".to_vec();
    s3.put_object()
        .bucket("selftest-bucket")
        .key("dir/a b+c.txt")
        .body(body.clone().into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("selftest-bucket")
        .key("dir/a b+c.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        body
    );
    s3.head_bucket()
        .bucket("selftest-bucket")
        .send()
        .await
        .unwrap();
    let missing = s3
        .head_bucket()
        .bucket("no-such-bucket")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing.into_service_error().is_not_found(),
        "HEAD of a missing bucket must be NotFound"
    );

    let calls = proxy.calls();
    assert!(calls.iter().all(|c| c.service == "s3"), "{calls:#?}");
    assert_eq!(calls[0], call("s3", "PUT /selftest-bucket", true, 200));
    assert!(
        calls[1]
            .operation
            .starts_with("PUT /selftest-bucket/dir/a%20b"),
        "{calls:#?}"
    );
    assert!(calls[1].mutating && calls[1].status == 200, "{calls:#?}");
    assert!(
        calls[2].operation.starts_with("GET /selftest-bucket/dir/"),
        "{calls:#?}"
    );
    assert!(!calls[2].mutating, "{calls:#?}");
    assert_eq!(calls[3], call("s3", "HEAD /selftest-bucket", false, 200));
    assert_eq!(calls[4], call("s3", "HEAD /no-such-bucket", false, 404));
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert_eq!(proxy.mutating_calls().len(), 2);
}

#[tokio::test]
async fn fail_rule_json_protocol_only_first_n_calls() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    proxy.add_rule(Rule::fail(
        "CreateTable",
        1,
        400,
        "ValidationException",
        "injected \"fault\"",
    ));
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);

    let err = create_table(&ddb, "faulty").await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert_eq!(err.message(), Some("injected \"fault\""));
    // Nothing reached moto.
    assert!(ddb
        .list_tables()
        .send()
        .await
        .unwrap()
        .table_names()
        .is_empty());
    // The rule is used up: the next call is forwarded.
    create_table(&ddb, "faulty").await.unwrap();

    assert_eq!(
        proxy.calls(),
        vec![
            call("dynamodb", "CreateTable", true, 400),
            call("dynamodb", "ListTables", false, 200),
            call("dynamodb", "CreateTable", true, 200),
        ]
    );
    assert_eq!(
        proxy.injected_calls(),
        vec![call("dynamodb", "CreateTable", true, 400)]
    );
}

#[tokio::test]
async fn fail_rule_retryable_error_is_retried_by_sdk() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    proxy.add_rule(Rule::fail(
        "dynamodb:CreateTable",
        2,
        400,
        "ThrottlingException",
        "slow down",
    ));
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);

    // Standard retry mode makes 3 attempts: 2 injected throttles, then success.
    create_table(&ddb, "retried").await.unwrap();
    let statuses: Vec<u16> = proxy.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [400, 400, 200]);
}

#[tokio::test]
async fn fail_rule_query_protocol() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    proxy.add_rule(Rule::fail(
        "iam:CreateRole",
        1,
        409,
        "EntityAlreadyExists",
        "Role with name x already exists.",
    ));
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let iam = aws_sdk_iam::Client::new(&conf);

    let create = || {
        iam.create_role()
            .role_name("x")
            .assume_role_policy_document(TRUST_POLICY)
            .send()
    };
    let err = create().await.unwrap_err();
    assert_eq!(err.code(), Some("EntityAlreadyExists"), "{err:?}");
    assert!(err
        .into_service_error()
        .is_entity_already_exists_exception());
    create().await.unwrap();
    assert_eq!(
        proxy.calls(),
        vec![
            call("iam", "CreateRole", true, 409),
            call("iam", "CreateRole", true, 200),
        ]
    );
}

#[tokio::test]
async fn fail_rule_s3_rest_protocol() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    proxy.add_rule(Rule::fail(
        "PUT /bkt-one",
        1,
        409,
        "OperationAborted",
        "A conflicting conditional operation is in progress",
    ));
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let s3 = support::s3_client(&conf);

    let err = s3
        .create_bucket()
        .bucket("bkt-one")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("OperationAborted"), "{err:?}");
    s3.create_bucket().bucket("bkt-one").send().await.unwrap();
    assert_eq!(proxy.injected_calls().len(), 1);
    assert_eq!(proxy.calls().len(), 2);
}

#[tokio::test]
async fn delay_rule_delays_matching_calls() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    ddb.list_tables().send().await.unwrap(); // warm up

    proxy.add_rule(Rule::delay("ListTables", Duration::from_millis(700)).times(1));
    let t = Instant::now();
    ddb.list_tables().send().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );

    let t = Instant::now();
    ddb.list_tables().send().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );

    proxy.clear_rules();
    assert_eq!(proxy.calls().len(), 3);
}

/// A latency rule forwards at once and holds only the answer (the emulator's
/// own time is part of the round trip); matching latency rules add up.
#[tokio::test]
async fn latency_rule_holds_the_answer_not_the_request() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let conf = support::sdk_config(&proxy.endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::new(&conf);
    ddb.list_tables().send().await.unwrap(); // warm up
    create_table(&ddb, "warm").await.unwrap();

    proxy.add_rule(Rule::latency("CreateTable", Duration::from_millis(500)));
    proxy.add_rule(Rule::latency("CreateTable", Duration::from_millis(700)));
    let t = Instant::now();
    let pending = tokio::spawn({
        let ddb = ddb.clone();
        async move { create_table(&ddb, "held").await.map(|_| Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let names = ddb.list_tables().send().await.unwrap().table_names;
    assert!(
        names.iter().flatten().any(|n| n == "held"),
        "the request reached moto before its answer was released: {names:?}"
    );
    assert!(
        !pending.is_finished(),
        "answered before the latency elapsed"
    );
    let answered = pending.await.unwrap().unwrap();
    assert!(
        answered.duration_since(t) >= Duration::from_millis(1200),
        "{:?}",
        answered.duration_since(t)
    );
}

/// The harness is usable from a plain `#[test]` (no ambient runtime).
#[test]
fn proxy_works_from_sync_test() {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.endpoint);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conf = support::sdk_config(&proxy.endpoint()).await;
        aws_sdk_sts::Client::new(&conf)
            .get_caller_identity()
            .send()
            .await
            .unwrap();
    });
    assert_eq!(
        proxy.calls(),
        vec![call("sts", "GetCallerIdentity", false, 200)]
    );
    assert!(proxy.mutating_calls().is_empty());
}
