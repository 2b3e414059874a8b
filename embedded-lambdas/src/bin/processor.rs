use aws_lambda_events::dynamodb::Event;
use embedded_lambdas::{processor, util};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    embedded_lambdas::init_logging();
    let cfg = processor::ProcessorConfig::from_env()?;
    let conf = util::sdk_config().await;
    let ddb = util::dynamodb_client(&conf);
    let s3 = util::s3_client(&conf);
    tokio::join!(
        util::prewarm_dynamodb(&ddb),
        util::prewarm_s3(&s3, &cfg.bucket_name)
    );
    let (cfg, ddb, s3) = (&cfg, &ddb, &s3);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Event>| async move {
        Ok::<_, Error>(processor::handle(cfg, ddb, s3, &ev.payload).await)
    }))
    .await
}
