//! Caches in S3 for workers (runway.toml's `cache_url = "s3://bucket/prefix"`): the
//! serve node holds the credentials (the AWS chain, `AWS_ENDPOINT_URL`) and hands a
//! worker a presigned URL per archive, valid for minutes, only for the job it holds:
//! reading its branch's cache or the default branch's, writing its own branch's. A
//! worker cannot read another repository's caches or poison another branch's.

use std::time::Duration;

use crate::cache::store::object_name;

/// How long a presigned URL works.
const VALID_FOR: Duration = Duration::from_secs(600);

/// The bucket and prefix caches live under, with a client.
pub(super) struct CacheBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

pub use crate::protocol::CacheOp;

pub(super) use crate::store::archive::parse_s3_url as parse_url;

impl CacheBucket {
    /// The bucket `url` names, reached with this process's AWS settings.
    pub(super) async fn connect(url: &str) -> Result<CacheBucket, String> {
        let (bucket, prefix) = parse_url(url).map_err(|e| format!("cache_url {e}"))?;
        Ok(CacheBucket {
            client: crate::store::archive::s3_client().await,
            bucket,
            prefix,
        })
    }

    /// A URL that does `op` on (repo, branch, key)'s archive for the next minutes.
    pub(super) async fn presign(
        &self,
        op: CacheOp,
        repo: &str,
        branch: &str,
        key: &str,
    ) -> Result<String, String> {
        let name = object_name(repo, branch, key);
        let object = if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        };
        let how = aws_sdk_s3::presigning::PresigningConfig::expires_in(VALID_FOR)
            .map_err(|e| e.to_string())?;
        let signed = match op {
            CacheOp::Get => self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&object)
                .presigned(how)
                .await
                .map_err(|e| crate::error_chain(&e))?,
            CacheOp::Put => self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&object)
                .presigned(how)
                .await
                .map_err(|e| crate::error_chain(&e))?,
        };
        Ok(signed.uri().to_string())
    }
}

/// A cache key a worker may ask for: what [`crate::cache::key`] makes.
pub(super) fn plausible_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 300 && !key.contains('/') && !key.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            parse_url("s3://b/ci/caches/").unwrap(),
            ("b".into(), "ci/caches".into())
        );
        assert_eq!(parse_url("s3://b").unwrap(), ("b".into(), String::new()));
        assert!(parse_url("https://b").is_err());
        assert!(parse_url("s3:///x").is_err());
        assert!(plausible_key("cache-linux-bookworm-abc123--python-3.12"));

        assert!(!plausible_key("a/b"));
    }
}
