use aws_lambda_events::s3::S3Event;
use embedded_lambdas::{dead_letter, util};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    embedded_lambdas::init_logging();
    let cfg = dead_letter::DeadLetterConfig::from_env()?;
    let conf = util::sdk_config().await;
    let ddb = util::dynamodb_client(&conf);
    let s3 = util::s3_client(&conf);
    tokio::join!(
        util::prewarm_dynamodb(&ddb),
        util::prewarm_s3(&s3, &cfg.bucket_name)
    );
    let (cfg, ddb, s3) = (&cfg, &ddb, &s3);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<S3Event>| async move {
        // An error makes Lambda retry the asynchronous S3 notification.
        dead_letter::handle(cfg, ddb, s3, &ev.payload, util::now_unix())
            .await
            .map(|s| {
                serde_json::json!({
                    "deadLettered": s.dead_lettered,
                    "unparsed": s.unparsed,
                    "alreadyProcessed": s.already_processed,
                    "writtenAgain": s.written_again,
                })
            })
            .map_err(Error::from)
    }))
    .await
}
