//! Where finished jobs' logs go, out of the database's rows ([`LogArchive`]): zstd files
//! beside the embedded store (`$RUNWAY_STATE_DIR/logs/archive/BUILD/JOB.log.zst`), or zstd
//! objects in S3 for a PostgreSQL store whose serve nodes name a `log_url` (recorded in
//! the database, so every process that reads the store finds them). A build's log is
//! written to its rows first and moved after, so a crash between the two loses nothing.

use std::path::PathBuf;

use super::StoreError;

/// A home for finished logs.
pub trait LogArchive: Send {
    /// Keeps job `job`'s log of build `build_id`; what to find it by.
    fn put(&self, build_id: i64, job: &str, log: &[u8]) -> Result<String, StoreError>;
    /// The log kept under `reference`.
    fn get(&self, reference: &str) -> Result<Vec<u8>, StoreError>;
    /// Drops every log of build `build_id` (retention).
    fn remove(&self, build_id: i64) -> Result<(), StoreError>;
}

fn zstd_of(log: &[u8]) -> Result<Vec<u8>, StoreError> {
    Ok(zstd::encode_all(log, 3)?)
}

fn unzstd(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    Ok(zstd::decode_all(bytes)?)
}

/// A job's name as one path component.
fn job_file(job: &str) -> String {
    let safe: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.log.zst")
}

/// Files in a directory.
pub struct Files(pub PathBuf);

impl LogArchive for Files {
    fn put(&self, build_id: i64, job: &str, log: &[u8]) -> Result<String, StoreError> {
        let dir = self.0.join(build_id.to_string());
        std::fs::create_dir_all(&dir)?;
        let name = format!("{build_id}/{}", job_file(job));
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut tmp, &zstd_of(log)?)?;
        tmp.persist(self.0.join(&name)).map_err(|e| e.error)?;
        Ok(format!("file:{name}"))
    }

    fn get(&self, reference: &str) -> Result<Vec<u8>, StoreError> {
        let name = reference
            .strip_prefix("file:")
            .filter(|n| !n.contains(".."))
            .ok_or_else(|| StoreError::Data(format!("a log kept as {reference:?}")))?;
        unzstd(&std::fs::read(self.0.join(name))?)
    }

    fn remove(&self, build_id: i64) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(self.0.join(build_id.to_string())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Objects in S3 (`s3://bucket/prefix`), reached with this process's AWS chain and
/// `AWS_ENDPOINT_URL`. The SDK is asynchronous and the store is not: calls go to a
/// thread of the archive's own that runs them.
pub struct Bucket {
    calls: std::sync::mpsc::Sender<Call>,
}

/// A call run on the archive's thread.
type Call = Box<dyn FnOnce(&Client) + Send>;

/// The S3 client, the bucket and the prefix, on the archive's thread.
pub struct Client {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl Client {
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// Reads `s3://bucket/prefix`.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?}: expected s3://bucket/prefix"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url:?}: no bucket"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An S3 client from this process's settings (a custom endpoint is addressed by path).
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut conf = aws_sdk_s3::config::Builder::from(&config);
    if std::env::var_os("AWS_ENDPOINT_URL").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
    {
        conf = conf.force_path_style(true);
    }
    if config.region().is_none() {
        conf = conf.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(conf.build())
}

impl Bucket {
    /// The bucket `url` names.
    pub fn open(url: &str) -> Result<Bucket, StoreError> {
        let (bucket, prefix) = parse_s3_url(url).map_err(StoreError::Data)?;
        let (calls, queue) = std::sync::mpsc::channel::<Call>();
        let (ready, made) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("runway-log-archive".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let s3 = runtime.block_on(s3_client());
                let client = Client {
                    s3,
                    bucket,
                    prefix,
                    runtime,
                };
                let _ = ready.send(Ok(()));
                for call in queue {
                    call(&client);
                }
            })?;
        made.recv()
            .map_err(|_| StoreError::Data("the log archive's thread ended".into()))?
            .map_err(StoreError::Data)?;
        Ok(Bucket { calls })
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.calls
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| StoreError::Data("the log archive's thread ended".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Data("the log archive's thread ended".into()))?
    }
}

fn s3_error(e: impl std::error::Error) -> StoreError {
    StoreError::Data(format!("log archive: {}", crate::error_chain(&e)))
}

impl LogArchive for Bucket {
    fn put(&self, build_id: i64, job: &str, log: &[u8]) -> Result<String, StoreError> {
        let name = format!("{build_id}/{}", job_file(job));
        let body = zstd_of(log)?;
        let reference = format!("s3:{name}");
        self.call(move |c| {
            let key = c.key(&name);
            c.runtime
                .block_on(
                    c.s3.put_object()
                        .bucket(&c.bucket)
                        .key(key)
                        .body(body.into())
                        .send(),
                )
                .map_err(s3_error)?;
            Ok(())
        })?;
        Ok(reference)
    }

    fn get(&self, reference: &str) -> Result<Vec<u8>, StoreError> {
        let name = reference
            .strip_prefix("s3:")
            .ok_or_else(|| StoreError::Data(format!("a log kept as {reference:?}")))?
            .to_string();
        let bytes = self.call(move |c| {
            let key = c.key(&name);
            c.runtime.block_on(async {
                let got =
                    c.s3.get_object()
                        .bucket(&c.bucket)
                        .key(key)
                        .send()
                        .await
                        .map_err(s3_error)?;
                let body = got.body.collect().await.map_err(s3_error)?;
                Ok(body.into_bytes().to_vec())
            })
        })?;
        unzstd(&bytes)
    }

    fn remove(&self, build_id: i64) -> Result<(), StoreError> {
        self.call(move |c| {
            c.runtime.block_on(async {
                let listed =
                    c.s3.list_objects_v2()
                        .bucket(&c.bucket)
                        .prefix(c.key(&format!("{build_id}/")))
                        .send()
                        .await
                        .map_err(s3_error)?;
                for o in listed.contents() {
                    if let Some(k) = o.key() {
                        c.s3.delete_object()
                            .bucket(&c.bucket)
                            .key(k)
                            .send()
                            .await
                            .map_err(s3_error)?;
                    }
                }
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_keep_logs_compressed_and_drop_a_builds() {
        let dir = tempfile::tempdir().unwrap();
        let a = Files(dir.path().to_path_buf());
        let log = b"$ make test\nok\n".repeat(1000);
        let r = a.put(7, "7.1", &log).unwrap();
        assert_eq!(r, "file:7/7.1.log.zst");
        assert_eq!(a.get(&r).unwrap(), log);
        let size = std::fs::metadata(dir.path().join("7/7.1.log.zst"))
            .unwrap()
            .len();
        assert!(size < log.len() as u64 / 10, "compressed: {size}");
        assert!(a.get("file:../x").is_err());
        a.remove(7).unwrap();
        assert!(a.get(&r).is_err());
        a.remove(7).unwrap();
        assert_eq!(
            parse_s3_url("s3://b/logs/").unwrap(),
            ("b".into(), "logs".into())
        );
    }
}
