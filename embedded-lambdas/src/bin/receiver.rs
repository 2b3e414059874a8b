use aws_lambda_events::apigw::ApiGatewayProxyRequest;
use embedded_lambdas::{receiver, util};
use lambda_runtime::{service_fn, Error, LambdaEvent};

// One invocation at a time per environment: a current-thread runtime starts
// faster and uses less memory than the multi-threaded one.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    embedded_lambdas::init_logging();
    // Init: configuration and clients once, and a warm connection (see util).
    let cfg = receiver::ReceiverConfig::from_env()?;
    let conf = util::sdk_config().await;
    let ddb = util::dynamodb_client(&conf);
    util::prewarm_dynamodb(&ddb).await;
    let (cfg, ddb) = (&cfg, &ddb);
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<ApiGatewayProxyRequest>| async move {
            Ok::<_, Error>(receiver::handle(cfg, ddb, &ev.payload, util::now_unix()).await)
        },
    ))
    .await
}
