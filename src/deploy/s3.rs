//! The s3 provider (docs/semantics.md §6a, dpl v2 defaults, v1 spellings accepted):
//! uploads the files of `local_dir` that match `glob` in parallel (`max_threads`),
//! large files as multipart, with ACL, content type, cache control, expiry, storage
//! class, encryption and content encoding per file. It never deletes remote objects.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, IndexDocument, ObjectCannedAcl, ServerSideEncryption,
    StorageClass, WebsiteConfiguration,
};

use super::{DeployError, Options, aws, content_type, fnmatch, s3_files};

/// Files at least this large go up as multipart uploads.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Part size of multipart uploads.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Bodies are read from files in chunks this large (the SDK's default, 4 KiB, cost a
/// system call and a body frame per 4 KiB: most of an upload's CPU time).
const READ_BUFFER: usize = 256 * 1024;

/// One file's upload headers.
#[derive(Clone, Debug, PartialEq)]
struct Headers {
    content_type: String,
    cache_control: String,
    expires: Option<DateTime>,
    content_encoding: Option<&'static str>,
}

/// Everything the s3 provider reads from its options.
#[derive(Clone, Debug)]
pub struct S3Plan {
    /// The bucket.
    pub bucket: String,
    /// `local_dir`, absolute (for messages).
    pub local_dir: PathBuf,
    /// `local_dir` as written.
    pub local_written: String,
    /// The job's build directory, which `local_dir` may not leave.
    pub build_dir: PathBuf,
    /// `upload_dir` (key prefix).
    pub upload_dir: String,
    /// `glob`.
    pub glob: String,
    /// `dot_match`.
    pub dot_match: bool,
    /// `acl`, with `_` as `-`.
    pub acl: String,
    /// `cache_control`: a value, or `value: glob` mappings (first match wins).
    pub cache_control: Vec<String>,
    /// `expires`: the same mapping syntax.
    pub expires: Vec<String>,
    /// `storage_class`.
    pub storage_class: String,
    /// `server_side_encryption`.
    pub sse: bool,
    /// `detect_encoding`.
    pub detect_encoding: bool,
    /// `default_text_charset`.
    pub charset: Option<String>,
    /// `index_document_suffix`.
    pub index_document_suffix: Option<String>,
    /// `overwrite` (false: HEAD first and skip existing keys).
    pub overwrite: bool,
    /// `max_threads` (1..=15).
    pub max_threads: usize,
}

impl S3Plan {
    /// Reads the options.
    pub fn from_options(o: &Options, build_dir: &Path) -> Result<S3Plan, DeployError> {
        let bucket = o
            .get("bucket")
            .filter(|b| !b.is_empty())
            .ok_or_else(|| DeployError::Config("s3: bucket is required".into()))?;
        let local = o.get("local_dir").unwrap_or_else(|| ".".into());
        let rel = crate::beneath::inside(build_dir, Path::new(&local)).map_err(|why| {
            DeployError::Config(format!(
                "s3: local_dir {why}; a deploy uploads only what is in the job's build directory"
            ))
        })?;
        Ok(S3Plan {
            bucket,
            local_dir: build_dir.join(rel),
            local_written: local,
            build_dir: build_dir.to_path_buf(),
            upload_dir: o
                .get("upload_dir")
                .unwrap_or_default()
                .trim_matches('/')
                .to_string(),
            glob: o.get("glob").unwrap_or_else(|| "**/*".into()),
            dot_match: o.flag("dot_match", false),
            acl: o
                .get("acl")
                .unwrap_or_else(|| "private".into())
                .replace('_', "-"),
            cache_control: o.list("cache_control"),
            expires: o.list("expires"),
            storage_class: o.get("storage_class").unwrap_or_else(|| "STANDARD".into()),
            sse: o.flag("server_side_encryption", false),
            detect_encoding: o.flag("detect_encoding", false),
            charset: o.get("default_text_charset"),
            index_document_suffix: o.get("index_document_suffix"),
            overwrite: o.flag("overwrite", true),
            max_threads: o
                .get("max_threads")
                .and_then(|n| n.parse().ok())
                .unwrap_or(5)
                .clamp(1, 15),
        })
    }

    /// The key of a file (path relative to local_dir).
    pub fn key(&self, rel: &str) -> String {
        if self.upload_dir.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.upload_dir)
        }
    }

    fn headers(&self, rel: &str, path: &Path) -> Result<Headers, DeployError> {
        let mut ct = content_type(rel).to_string();
        if let Some(cs) = &self.charset
            && ct.starts_with("text/")
        {
            ct = format!("{ct}; charset={cs}");
        }
        let cache_control = mapped(&self.cache_control, rel).unwrap_or_else(|| "no-cache".into());
        let expires = match mapped(&self.expires, rel) {
            Some(v) => Some(parse_expires(&v)?),
            None => None,
        };
        let content_encoding = if self.detect_encoding {
            encoding_of(path)
        } else {
            None
        };
        Ok(Headers {
            content_type: ct,
            cache_control,
            expires,
            content_encoding,
        })
    }
}

/// `["max-age=3600: *.js,*.css", "no-cache"]` → the value for `rel`: the first entry
/// whose globs match, or an entry without globs.
fn mapped(entries: &[String], rel: &str) -> Option<String> {
    for e in entries {
        match e.rsplit_once(": ") {
            Some((value, globs)) if !globs.contains('=') => {
                if globs.split(',').any(|g| fnmatch(g.trim(), rel)) {
                    return Some(value.trim().to_string());
                }
            }
            _ => return Some(e.trim().to_string()),
        }
    }
    None
}

/// `"2030-01-01 00:00:00 UTC"` (dpl's format) or RFC 3339.
fn parse_expires(v: &str) -> Result<DateTime, DeployError> {
    let iso = v.trim().trim_end_matches(" UTC").replacen(' ', "T", 1);
    let iso = if iso.ends_with('Z') {
        iso
    } else {
        format!("{iso}Z")
    };
    DateTime::from_str(&iso, DateTimeFormat::DateTime).map_err(|_| {
        DeployError::Config(format!(
            "s3: expires \"{v}\" is not \"YYYY-MM-DD HH:MM:SS UTC\""
        ))
    })
}

/// Content-Encoding by magic bytes, as `file` would say (gzip, compress).
fn encoding_of(path: &Path) -> Option<&'static str> {
    let mut head = [0u8; 2];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    match head {
        [0x1f, 0x8b] => Some("gzip"),
        [0x1f, 0x9d] => Some("compress"),
        _ => None,
    }
}

/// What an upload did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files uploaded.
    pub files: usize,
    /// Files skipped (`overwrite: false` and the key exists).
    pub skipped: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
}

/// Uploads per the plan; `say` gets one line per file (and the summary).
pub async fn upload(
    client: &Client,
    plan: &S3Plan,
    say: &(dyn Fn(String) + Sync),
) -> Result<Summary, DeployError> {
    let started = Instant::now();
    let dir = super::open_local_dir(&plan.build_dir, &plan.local_written)?;
    let files = s3_files(&dir, &plan.glob, plan.dot_match);
    let sem = Arc::new(tokio::sync::Semaphore::new(plan.max_threads));
    let mut tasks = tokio::task::JoinSet::new();
    for (rel, size) in files {
        // Opened beneath local_dir without following links; read through its own
        // descriptor (/proc/self/fd/N names the open file, not a path the job can move).
        let file = dir.file(Path::new(&rel)).map_err(|e| {
            DeployError::Failed(format!(
                "s3: {}",
                crate::beneath::refused(&plan.local_dir.join(&rel), &e)
            ))
        })?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let headers = plan.headers(&rel, &path)?;
        let key = plan.key(&rel);
        let (client, plan, sem) = (client.clone(), plan.clone(), sem.clone());
        tasks.spawn(async move {
            let _open = file;
            let _permit = sem.acquire_owned().await.expect("semaphore");
            if !plan.overwrite {
                let exists = client
                    .head_object()
                    .bucket(&plan.bucket)
                    .key(&key)
                    .send()
                    .await;
                if exists.is_ok() {
                    return Ok((rel, key, size, headers, true));
                }
            }
            let result = if size >= MULTIPART_THRESHOLD {
                put_multipart(&client, &plan, &key, &path, &headers).await
            } else {
                put_small(&client, &plan, &key, &path, &headers).await
            };
            result.map(|()| (rel, key, size, headers, false))
        });
    }
    let mut summary = Summary::default();
    while let Some(done) = tasks.join_next().await {
        let (rel, key, size, headers, skipped) =
            done.map_err(|e| DeployError::Failed(e.to_string()))??;
        if skipped {
            summary.skipped += 1;
            say(format!(
                "skipped {rel}: s3://{}/{key} exists (overwrite: false)",
                plan.bucket
            ));
        } else {
            summary.files += 1;
            summary.bytes += size;
            say(format!(
                "uploaded {rel} ({size} bytes, {}, {}) to s3://{}/{key}",
                headers.content_type, plan.acl, plan.bucket
            ));
        }
    }
    if let Some(suffix) = &plan.index_document_suffix {
        let website = WebsiteConfiguration::builder()
            .index_document(
                IndexDocument::builder()
                    .suffix(suffix)
                    .build()
                    .map_err(|e| DeployError::Config(e.to_string()))?,
            )
            .build();
        client
            .put_bucket_website()
            .bucket(&plan.bucket)
            .website_configuration(website)
            .send()
            .await
            .map_err(|e| s3_error(&plan.bucket, "", e))?;
        say(format!("bucket website: index document suffix {suffix}"));
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn put_small(
    client: &Client,
    plan: &S3Plan,
    key: &str,
    path: &Path,
    h: &Headers,
) -> Result<(), DeployError> {
    let body = ByteStream::read_from()
        .path(path)
        .buffer_size(READ_BUFFER)
        .build()
        .await
        .map_err(|e| DeployError::Failed(format!("s3: reading {}: {e}", path.display())))?;
    let mut req = client
        .put_object()
        .bucket(&plan.bucket)
        .key(key)
        .body(body)
        .content_type(&h.content_type)
        .cache_control(&h.cache_control)
        .acl(ObjectCannedAcl::from(plan.acl.as_str()))
        .storage_class(StorageClass::from(plan.storage_class.as_str()))
        .set_expires(h.expires)
        .set_content_encoding(h.content_encoding.map(str::to_string));
    if plan.sse {
        req = req.server_side_encryption(ServerSideEncryption::Aes256);
    }
    // The body is not hashed for the signature (UNSIGNED-PAYLOAD, as the CLIs send):
    // hashing every byte first doubled the CPU time of an upload.
    req.customize()
        .disable_payload_signing()
        .send()
        .await
        .map_err(|e| s3_error(&plan.bucket, key, e))?;
    Ok(())
}

async fn put_multipart(
    client: &Client,
    plan: &S3Plan,
    key: &str,
    path: &Path,
    h: &Headers,
) -> Result<(), DeployError> {
    let mut req = client
        .create_multipart_upload()
        .bucket(&plan.bucket)
        .key(key)
        .content_type(&h.content_type)
        .cache_control(&h.cache_control)
        .acl(ObjectCannedAcl::from(plan.acl.as_str()))
        .storage_class(StorageClass::from(plan.storage_class.as_str()))
        .set_expires(h.expires)
        .set_content_encoding(h.content_encoding.map(str::to_string));
    if plan.sse {
        req = req.server_side_encryption(ServerSideEncryption::Aes256);
    }
    let created = req
        .send()
        .await
        .map_err(|e| s3_error(&plan.bucket, key, e))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| DeployError::Failed(format!("s3: reading {}: {e}", path.display())))?
        .len();
    let mut parts = upload_parts(client, &plan.bucket, key, &upload_id, path, size);
    let mut done = Vec::new();
    while let Some(p) = parts.join_next().await {
        match p.map_err(|e| DeployError::Failed(e.to_string()))? {
            Ok(part) => done.push(part),
            Err(e) => {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(&plan.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(e);
            }
        }
    }
    done.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(&plan.bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .map_err(|e| s3_error(&plan.bucket, key, e))?;
    Ok(())
}

/// The parts of a multipart upload of `path` (`size` bytes), uploading side by side,
/// each streamed from its place in the file.
fn upload_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    path: &Path,
    size: u64,
) -> tokio::task::JoinSet<Result<CompletedPart, DeployError>> {
    let mut parts = tokio::task::JoinSet::new();
    for (i, offset) in (0..size).step_by(PART_SIZE).enumerate() {
        let (client, bucket, key, upload_id) = (
            client.clone(),
            bucket.to_string(),
            key.to_string(),
            upload_id.to_string(),
        );
        let path = path.to_path_buf();
        let len = (size - offset).min(PART_SIZE as u64);
        let number = i as i32 + 1;
        parts.spawn(async move {
            // Each part streams from the file: nothing is read into memory whole.
            let body = ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(len))
                .buffer_size(READ_BUFFER)
                .build()
                .await
                .map_err(|e| DeployError::Failed(format!("s3: reading {}: {e}", path.display())))?;
            let r = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .body(body)
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| s3_error(&bucket, &key, e))?;
            Ok::<_, DeployError>(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(r.e_tag().map(str::to_string))
                    .build(),
            )
        });
    }
    parts
}

/// An S3 error as a message that says what to fix.
pub fn s3_error<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
    bucket: &str,
    key: &str,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> DeployError
where
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_string();
    let target = if key.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{key}")
    };
    let msg = match code.as_str() {
        "NoSuchBucket" => {
            format!("the bucket {bucket} does not exist: create it, or fix `bucket` (and `region`)")
        }
        "AccessDenied" | "Forbidden" => format!(
            "access denied writing {target}: give these credentials s3:PutObject (and s3:PutObjectAcl for `acl`) on the bucket, or fix access_key_id/secret_access_key"
        ),
        "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            "the AWS credentials were refused: check access_key_id and secret_access_key"
                .to_string()
        }
        "" => format!(
            "could not reach S3 for {target}: {} (is the endpoint right and the server up?)",
            crate::error_chain(&e)
        ),
        _ => format!("{target}: {code}: {}", e.message().unwrap_or_default()),
    };
    DeployError::Failed(msg)
}

/// The s3 provider.
pub struct S3;

impl super::Provider for S3 {
    fn describe(&self, d: &super::Deploy<'_>, opt: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let (config, build_dir) = (d.config, d.build_dir);
        let mut lines = Vec::new();
        let bucket = opt("bucket").unwrap_or_default();
        let local = opt("local_dir").unwrap_or_else(|| ".".into());
        let upload = opt("upload_dir").unwrap_or_default();
        let glob = opt("glob").unwrap_or_else(|| "**/*".into());
        let dot = crate::config::views::DeployKeys(config).dot_match();
        let acl = opt("acl")
            .unwrap_or_else(|| "private".into())
            .replace('_', "-");
        let region = opt("region").unwrap_or_else(|| "us-east-1".into());
        lines.push(format!(
            "s3: bucket {bucket} (region {region}), acl {acl}, from {local}/"
        ));
        let files = match super::open_local_dir(build_dir, &local) {
            Ok(dir) => s3_files(&dir, &glob, dot),
            Err(e) => {
                lines.push(e.to_string());
                return lines;
            }
        };
        if files.is_empty() {
            lines.push(format!("s3: no files match {glob} in {local}/"));
        }
        let total: u64 = files.iter().map(|(_, s)| s).sum();
        for (rel, size) in &files {
            let key = if upload.is_empty() {
                rel.clone()
            } else {
                format!("{}/{rel}", upload.trim_end_matches('/'))
            };
            lines.push(format!(
                "would upload {rel} ({size} bytes, {}) to s3://{bucket}/{key}",
                content_type(rel)
            ));
        }
        lines.push(format!("s3: {} file(s), {total} bytes", files.len()));
        lines
    }

    fn deploy(
        &self,
        d: &super::Deploy<'_>,
        opts: &Options<'_>,
        env: &std::collections::HashMap<String, String>,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), DeployError> {
        let build_dir = d.build_dir;
        let rt = super::runtime()?;
        let plan = S3Plan::from_options(opts, build_dir)?;
        let settings = aws::settings(opts, env, aws::Service::S3)?;
        rt.block_on(async {
            let shared = aws::load(&settings).await?;
            // Checksums only where S3 requires them, as the CLIs do.
            let mut conf = aws_sdk_s3::config::Builder::from(&shared).request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
            if settings.endpoint.is_some() || opts.flag("force_path_style", false) {
                conf = conf.force_path_style(true);
            }
            let client = aws_sdk_s3::Client::from_conf(conf.build());
            say(format!(
                "s3: uploading {}/ to bucket {} ({})",
                plan.local_dir.display(),
                plan.bucket,
                settings.region
            ));
            let sum = upload(&client, &plan, say).await?;
            let mbs = if sum.seconds > 0.0 {
                sum.bytes as f64 / 1e6 / sum.seconds
            } else {
                0.0
            };
            say(format!(
                "s3: {} file(s) uploaded, {} skipped, {} bytes in {:.2}s ({mbs:.1} MB/s)",
                sum.files, sum.skipped, sum.bytes, sum.seconds
            ));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6a_cache_control_mapping_first_match_wins() {
        let m = vec![
            "max-age=3600: *.js,*.css".to_string(),
            "no-store: *.html".to_string(),
            "public".to_string(),
        ];
        assert_eq!(mapped(&m, "app.js").as_deref(), Some("max-age=3600"));
        assert_eq!(mapped(&m, "index.html").as_deref(), Some("no-store"));
        assert_eq!(mapped(&m, "img.png").as_deref(), Some("public"));
        assert_eq!(mapped(&[], "x"), None);
    }

    #[test]
    fn s6a_expires_format() {
        assert!(parse_expires("2030-01-01 00:00:00 UTC").is_ok());
        assert!(parse_expires("tomorrow").is_err());
    }
}
