//! AWS settings shared by the s3 and codedeploy providers: credentials (deploy options
//! first, then the job's environment, then the standard chain with profiles), region,
//! endpoint (a custom endpoint means path-style S3), and retries with backoff.

use std::collections::HashMap;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};

use super::DeployError;

/// Where the providers' AWS settings come from.
pub struct AwsSettings {
    /// Static credentials, when the options or the job env give them.
    pub credentials: Option<Credentials>,
    /// The region.
    pub region: String,
    /// A custom endpoint (MinIO, Ceph, a test server), if any.
    pub endpoint: Option<String>,
}

/// Which service an endpoint is for (`AWS_ENDPOINT_URL_S3`, `…_CODEDEPLOY`).
#[derive(Clone, Copy)]
pub enum Service {
    /// Amazon S3.
    S3,
    /// AWS CodeDeploy.
    CodeDeploy,
}

/// Resolves settings from provider options (`$VAR`-expanded) and the job env.
/// An option written with variables that expand to nothing (`access_key_id:
/// $AWS_ACCESS_KEY` with that variable unset) is an error naming the option and the
/// variable, as dpl said, rather than a fall through to the SDK's metadata chain.
pub fn settings(
    opts: &super::Options,
    env: &HashMap<String, String>,
    service: Service,
) -> Result<AwsSettings, DeployError> {
    for key in [
        "access_key_id",
        "secret_access_key",
        "session_token",
        "region",
        "endpoint",
    ] {
        let Some(raw) = opts.raw(key).filter(|r| !r.trim().is_empty()) else {
            continue;
        };
        if opts.get(key).is_some_and(|v| v.trim().is_empty()) {
            let vars = crate::config::model::vars_in(&raw);
            let unset: Vec<&str> = vars
                .iter()
                .map(String::as_str)
                .filter(|v| env.get(*v).is_none_or(|x| x.is_empty()))
                .collect();
            return Err(DeployError::Config(format!(
                "deploy option {key} is empty: it is \"{raw}\" and {} {} not set in the job's \
                 environment (add {} to the repository's settings or --env-file)",
                unset.join(", "),
                if unset.len() == 1 { "is" } else { "are" },
                if unset.len() == 1 { "it" } else { "them" },
            )));
        }
    }
    let opt = |k: &str| opts.get(k);
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env.get(*n).filter(|v| !v.is_empty()).cloned())
    };
    let (prefix, endpoint_var) = match service {
        Service::S3 => ("S3", "AWS_ENDPOINT_URL_S3"),
        Service::CodeDeploy => ("CODEDEPLOY", "AWS_ENDPOINT_URL_CODEDEPLOY"),
    };
    let id = opt("access_key_id").filter(|v| !v.is_empty()).or_else(|| {
        var(&[
            "AWS_ACCESS_KEY_ID",
            &format!("{prefix}_ACCESS_KEY_ID"),
            "AWS_ACCESS_KEY",
        ])
    });
    let secret = opt("secret_access_key")
        .filter(|v| !v.is_empty())
        .or_else(|| {
            var(&[
                "AWS_SECRET_ACCESS_KEY",
                &format!("{prefix}_SECRET_ACCESS_KEY"),
                "AWS_SECRET_KEY",
            ])
        });
    let token = opt("session_token").or_else(|| var(&["AWS_SESSION_TOKEN"]));
    let credentials = match (id, secret) {
        (Some(id), Some(secret)) => Some(Credentials::new(id, secret, token, None, "runway")),
        _ => None,
    };
    let region = opt("region")
        .filter(|r| !r.is_empty())
        .or_else(|| var(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = opt("endpoint")
        .filter(|e| !e.is_empty())
        .or_else(|| var(&[endpoint_var, "AWS_ENDPOINT_URL"]))
        .map(|e| {
            if e.contains("://") {
                e
            } else {
                format!("https://{e}")
            }
        });
    Ok(AwsSettings {
        credentials,
        region,
        endpoint,
    })
}

/// Loads the shared AWS config: static credentials if given, else the standard chain
/// (environment, profiles), with the region and standard retries (throttling and 5xx
/// retried with exponential backoff, 5 attempts).
pub async fn load(s: &AwsSettings) -> Result<aws_config::SdkConfig, DeployError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(s.region.clone()))
        .retry_config(RetryConfig::standard().with_max_attempts(5));
    if let Some(c) = &s.credentials {
        loader = loader.credentials_provider(SharedCredentialsProvider::new(c.clone()));
    }
    if let Some(e) = &s.endpoint {
        loader = loader.endpoint_url(e);
    }
    let config = loader.load().await;
    if config.credentials_provider().is_none() {
        return Err(DeployError::Config(
            "no AWS credentials: set access_key_id and secret_access_key (as $SETTINGS), \
             or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the repository settings"
                .into(),
        ));
    }
    Ok(config)
}
