//! Where finished jobs' logs go, out of the database's rows ([`LogArchive`]): zstd files
//! beside the embedded store (`$RUNWAY_STATE_DIR/logs/archive/BUILD/JOB.log.zst`; a log
//! under [`SMALLEST_FILE`] stays in its row), or zstd
//! objects in S3 for a PostgreSQL store whose serve nodes name a `log_url` (recorded in
//! the database, so every process that reads the store finds them). A build's log is
//! written to its rows first and moved after, so a crash between the two loses nothing.

use std::path::PathBuf;

use super::StoreError;

/// A home for finished logs.
pub trait LogArchive: Send + Sync {
    /// Whether a log of `len` bytes is worth keeping here rather than in its row.
    fn worth(&self, _len: usize) -> bool {
        true
    }
    /// Keeps job `job`'s log of build `build_id`; what to find it by.
    fn put(&self, build_id: i64, job: &str, log: &[u8]) -> Result<String, StoreError>;
    /// The log kept under `reference`.
    fn get(&self, reference: &str) -> Result<Vec<u8>, StoreError>;
    /// Drops every log of build `build_id` (retention).
    fn remove(&self, build_id: i64) -> Result<(), StoreError>;
}

/// Reads the archived logs of `jobs` (`archived`: job number, reference) into them;
/// a log that cannot be read says so in its place. Slow (S3): call it outside any
/// lock on the store.
pub fn fill(
    archive: Option<&dyn LogArchive>,
    jobs: &mut [super::JobRow],
    archived: &[(String, String)],
) {
    for (number, reference) in archived {
        let log = match archive {
            Some(a) => a.get(reference).unwrap_or_else(|e| {
                format!(
                    "runway: this job's log could not be read from its archive ({reference}): {e}\n"
                )
                .into_bytes()
            }),
            None => format!(
                "runway: this job's log is in an archive this store does not name ({reference})\n"
            )
            .into_bytes(),
        };
        if let Some(j) = jobs.iter_mut().find(|j| &j.number == number) {
            j.log = log;
        }
    }
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

/// The smallest log kept as a file: a file takes a 4 KiB block, an inode and (for its
/// build) a directory of its own, where a row holds a short log in a fraction of a
/// page. A busy node's archive writes were 0.5 ms a build, nearly all of it the two
/// inodes (a filesystem without a journal checks each for a recent deletion).
pub const SMALLEST_FILE: usize = 4096;

impl LogArchive for Files {
    fn worth(&self, len: usize) -> bool {
        len >= SMALLEST_FILE
    }

    fn put(&self, build_id: i64, job: &str, log: &[u8]) -> Result<String, StoreError> {
        let dir = self.0.join(build_id.to_string());
        let made = !dir.is_dir();
        std::fs::create_dir_all(&dir)?;
        let name = format!("{build_id}/{}", job_file(job));
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut tmp, &zstd_of(log)?)?;
        // On the disk, name and all, before the store is told the log is here: the
        // row's move commits lazily, but the next synced commit carries it to disk,
        // and no journal orders the file's blocks before it.
        tmp.as_file().sync_data()?;
        tmp.persist(self.0.join(&name)).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()?;
        if made {
            std::fs::File::open(&self.0)?.sync_all()?;
        }
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
/// thread of the archive's own, whose runtime runs each as a task of its own, so one
/// slow call holds up no other.
pub struct Bucket {
    calls: tokio::sync::mpsc::UnboundedSender<Call>,
}

/// A call: its future, run on the archive's thread.
type Call = Box<
    dyn FnOnce(
            std::sync::Arc<Client>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// The S3 client, the bucket and the prefix.
pub struct Client {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
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
        let (calls, mut queue) = tokio::sync::mpsc::unbounded_channel::<Call>();
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
                runtime.block_on(async move {
                    let client = std::sync::Arc::new(Client {
                        s3: s3_client().await,
                        bucket,
                        prefix,
                    });
                    let _ = ready.send(Ok(()));
                    // Each call a task of its own; the thread ends with the Bucket.
                    while let Some(call) = queue.recv().await {
                        tokio::spawn(call(client.clone()));
                    }
                });
            })?;
        made.recv()
            .map_err(|_| StoreError::Data("the log archive's thread ended".into()))?
            .map_err(StoreError::Data)?;
        Ok(Bucket { calls })
    }

    /// Runs `f`'s future on the archive's thread and waits for its answer.
    fn call<T, F>(
        &self,
        f: impl FnOnce(std::sync::Arc<Client>) -> F + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.calls
            .send(Box::new(move |c| {
                Box::pin(async move {
                    let _ = tx.send(f(c).await);
                })
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
        self.call(move |c| async move {
            c.s3.put_object()
                .bucket(&c.bucket)
                .key(c.key(&name))
                .body(body.into())
                .send()
                .await
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
        let bytes = self.call(move |c| async move {
            let got =
                c.s3.get_object()
                    .bucket(&c.bucket)
                    .key(c.key(&name))
                    .send()
                    .await
                    .map_err(s3_error)?;
            let body = got.body.collect().await.map_err(s3_error)?;
            Ok(body.into_bytes().to_vec())
        })?;
        unzstd(&bytes)
    }

    fn remove(&self, build_id: i64) -> Result<(), StoreError> {
        self.call(move |c| async move {
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
