//! The codedeploy provider (docs/semantics.md §6b): HeadObject for the bundle's
//! version and ETag, RegisterApplicationRevision when the object is versioned,
//! CreateDeployment with an S3 or GitHub revision, and with `wait_until_deployed`,
//! GetDeployment until Succeeded, Failed or Stopped, showing what failed.

use std::time::Duration;

use aws_sdk_codedeploy::Client;
use aws_sdk_codedeploy::error::ProvideErrorMetadata;
use aws_sdk_codedeploy::types::{
    BundleType, DeploymentStatus, FileExistsBehavior, GitHubLocation, RevisionLocation,
    RevisionLocationType, S3Location,
};

use super::{DeployError, Options, aws};
use crate::config::views::DeployKeys;
use crate::error_chain;

/// What the codedeploy provider reads from its options.
#[derive(Clone, Debug, PartialEq)]
pub struct CodeDeployPlan {
    /// `application`.
    pub application: String,
    /// `deployment_group`.
    pub group: Option<String>,
    /// The revision.
    pub revision: Revision,
    /// `description` (default `Deploy build N via runway`; dpl said "via Travis CI").
    pub description: String,
    /// `file_exists_behavior`, uppercased.
    pub file_exists_behavior: String,
    /// `wait_until_deployed`.
    pub wait: bool,
}

/// Where the bundle is.
#[derive(Clone, Debug, PartialEq)]
pub enum Revision {
    /// A bundle in S3.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// zip, tar or tgz.
        bundle_type: String,
    },
    /// A GitHub commit.
    GitHub {
        /// `owner/repo`.
        repository: String,
        /// The commit.
        commit: String,
    },
}

/// The bundle type of a key: from `bundle_type`, else its extension.
pub fn bundle_type(key: &str, given: Option<String>) -> Result<String, DeployError> {
    if let Some(b) = given.filter(|b| !b.is_empty()) {
        return Ok(b.to_lowercase());
    }
    let lower = key.to_lowercase();
    if lower.ends_with(".zip") {
        Ok("zip".into())
    } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        Ok("tgz".into())
    } else if lower.ends_with(".tar") {
        Ok("tar".into())
    } else {
        Err(DeployError::Config(format!(
            "codedeploy: Unknown bundle type for key \"{key}\": use a .zip, .tar or .tgz key, or set bundle_type"
        )))
    }
}

impl CodeDeployPlan {
    /// Reads the options (`commit` and `repo` are the build's, for GitHub revisions).
    pub fn from_options(
        o: &Options,
        commit: &str,
        repo: &str,
        build_number: u64,
    ) -> Result<CodeDeployPlan, DeployError> {
        let application = o
            .get("application")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| DeployError::Config("codedeploy: application is required".into()))?;
        let revision_type = o
            .get("revision_type")
            .unwrap_or_else(|| {
                if o.has("bucket") {
                    "s3".into()
                } else {
                    "github".into()
                }
            })
            .to_lowercase();
        let revision = match revision_type.as_str() {
            "s3" => {
                let bucket = o.get("bucket").ok_or_else(|| {
                    DeployError::Config("codedeploy: bucket is required for an s3 revision".into())
                })?;
                let key = o.get("key").ok_or_else(|| {
                    DeployError::Config("codedeploy: key is required for an s3 revision".into())
                })?;
                let bundle_type = bundle_type(&key, o.get("bundle_type"))?;
                Revision::S3 {
                    bucket,
                    key,
                    bundle_type,
                }
            }
            "github" => Revision::GitHub {
                repository: o.get("repository").unwrap_or_else(|| repo.to_string()),
                commit: o.get("commit_id").unwrap_or_else(|| commit.to_string()),
            },
            other => {
                return Err(DeployError::Config(format!(
                    "codedeploy: unknown revision_type \"{other}\" (s3 or github)"
                )));
            }
        };
        let description = o
            .get("description")
            .map(|d| d.replace("%{build_number}", &build_number.to_string()))
            .unwrap_or_else(|| format!("Deploy build {build_number} via runway"));
        Ok(CodeDeployPlan {
            application,
            group: o.get("deployment_group"),
            revision,
            description,
            file_exists_behavior: o
                .get("file_exists_behavior")
                .unwrap_or_else(|| "disallow".into())
                .to_uppercase(),
            wait: o.flag("wait_until_deployed", false),
        })
    }
}

/// Runs the deployment: where the revision is, registered when versioned, the
/// deployment created, and (`wait_until_deployed`) followed to its end. `s3` reads the
/// bundle's version and ETag; `say` logs.
pub async fn deploy(
    client: &Client,
    s3: &aws_sdk_s3::Client,
    plan: &CodeDeployPlan,
    poll: Duration,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), DeployError> {
    let location = revision_location(s3, plan, say).await?;
    let versioned = location.s3_location().and_then(|l| l.version()).is_some();
    if versioned {
        client
            .register_application_revision()
            .application_name(&plan.application)
            .revision(location.clone())
            .description(&plan.description)
            .send()
            .await
            .map_err(|e| cd_error(plan, e))?;
        say(format!(
            "registered the revision with application {}",
            plan.application
        ));
    }
    let created = client
        .create_deployment()
        .application_name(&plan.application)
        .set_deployment_group_name(plan.group.clone())
        .description(&plan.description)
        .file_exists_behavior(FileExistsBehavior::from(plan.file_exists_behavior.as_str()))
        .revision(location)
        .send()
        .await
        .map_err(|e| cd_error(plan, e))?;
    let id = created.deployment_id().unwrap_or_default().to_string();
    say(format!("Deployment triggered: {id}"));
    if !plan.wait {
        return Ok(());
    }
    wait_until_deployed(client, plan, &id, poll, say).await
}

/// Where the revision is: the bundle in S3 (its version and ETag read, or the reason
/// it cannot be deployed), or a GitHub commit.
async fn revision_location(
    s3: &aws_sdk_s3::Client,
    plan: &CodeDeployPlan,
    say: &(dyn Fn(String) + Sync),
) -> Result<RevisionLocation, DeployError> {
    Ok(match &plan.revision {
        Revision::S3 {
            bucket,
            key,
            bundle_type,
        } => {
            let head = s3.head_object().bucket(bucket).key(key).send().await.map_err(|e| {
                    let code = e.code().unwrap_or_default().to_string();
                    DeployError::Failed(match code.as_str() {
                        "NotFound" | "NoSuchKey" | "NoSuchBucket" => format!(
                            "the bundle s3://{bucket}/{key} does not exist: upload it first (an s3 deploy before codedeploy, with the same bucket and key); nothing was deployed"
                        ),
                        "Forbidden" | "AccessDenied" => format!("access denied reading s3://{bucket}/{key}: give these credentials s3:GetObject on it"),
                        "" => format!("could not reach S3 to check s3://{bucket}/{key}: {}", error_chain(&e)),
                        _ => format!("s3://{bucket}/{key}: {code}"),
                    })
                })?;
            say(format!(
                "bundle s3://{bucket}/{key}: ETag {}{}",
                head.e_tag().unwrap_or("-"),
                head.version_id()
                    .map(|v| format!(", version {v}"))
                    .unwrap_or_default()
            ));
            RevisionLocation::builder()
                .revision_type(RevisionLocationType::S3)
                .s3_location(
                    S3Location::builder()
                        .bucket(bucket)
                        .key(key)
                        .bundle_type(BundleType::from(bundle_type.as_str()))
                        .set_version(head.version_id().map(str::to_string))
                        .set_e_tag(head.e_tag().map(str::to_string))
                        .build(),
                )
                .build()
        }
        Revision::GitHub { repository, commit } => RevisionLocation::builder()
            .revision_type(RevisionLocationType::GitHub)
            .git_hub_location(
                GitHubLocation::builder()
                    .repository(repository)
                    .commit_id(commit)
                    .build(),
            )
            .build(),
    })
}

/// Follows the deployment every `poll` (as Travis's dpl did) until it succeeds, or
/// fails with its error and the lifecycle events that failed.
async fn wait_until_deployed(
    client: &Client,
    plan: &CodeDeployPlan,
    id: &str,
    poll: Duration,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), DeployError> {
    let mut last = None;
    loop {
        tokio::time::sleep(poll).await;
        let got = client
            .get_deployment()
            .deployment_id(id)
            .send()
            .await
            .map_err(|e| cd_error(plan, e))?;
        let info = got.deployment_info();
        let status = info.and_then(|i| i.status()).cloned();
        if status != last {
            say(format!(
                "Deployment {id}: {}",
                status.as_ref().map(|s| s.as_str()).unwrap_or("?")
            ));
            last = status.clone();
        }
        match status {
            Some(DeploymentStatus::Succeeded) => return Ok(()),
            Some(DeploymentStatus::Failed) | Some(DeploymentStatus::Stopped) => {
                let mut why = format!(
                    "deployment {id} {}",
                    status
                        .map(|s| s.as_str().to_lowercase())
                        .unwrap_or_default()
                );
                if let Some(err) = info.and_then(|i| i.error_information()) {
                    why.push_str(&format!(
                        ": {}: {}",
                        err.code().map(|c| c.as_str()).unwrap_or("?"),
                        err.message().unwrap_or("")
                    ));
                }
                for line in failing_events(client, id).await {
                    say(line.clone());
                    why.push_str(&format!("; {line}"));
                }
                return Err(DeployError::Failed(why));
            }
            _ => {}
        }
    }
}

/// The lifecycle events that failed on the deployment's targets, with diagnostics.
async fn failing_events(client: &Client, id: &str) -> Vec<String> {
    let Ok(targets) = client
        .list_deployment_targets()
        .deployment_id(id)
        .send()
        .await
    else {
        return Vec::new();
    };
    let ids: Vec<String> = targets.target_ids().to_vec();
    if ids.is_empty() {
        return Vec::new();
    }
    let Ok(got) = client
        .batch_get_deployment_targets()
        .deployment_id(id)
        .set_target_ids(Some(ids))
        .send()
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in got.deployment_targets() {
        let Some(inst) = t.instance_target() else {
            continue;
        };
        for ev in inst.lifecycle_events() {
            if ev.status().map(|s| s.as_str()) == Some("Failed") {
                let d = ev.diagnostics();
                out.push(format!(
                    "instance {}: lifecycle event {} failed: {}{}",
                    inst.target_id().unwrap_or("?"),
                    ev.lifecycle_event_name().unwrap_or("?"),
                    d.and_then(|d| d.message()).unwrap_or(""),
                    d.and_then(|d| d.log_tail())
                        .filter(|t| !t.trim().is_empty())
                        .map(|t| format!(" (log tail: {})", t.trim()))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// A CodeDeploy error as a message that says what to fix.
fn cd_error<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    plan: &CodeDeployPlan,
    e: aws_sdk_codedeploy::error::SdkError<E, R>,
) -> DeployError {
    let code = e.code().unwrap_or_default().to_string();
    let app = &plan.application;
    let group = plan.group.as_deref().unwrap_or("");
    DeployError::Failed(match code.as_str() {
        "ApplicationDoesNotExistException" => format!(
            "the CodeDeploy application \"{app}\" does not exist in this region: create it (aws deploy create-application --application-name {app}) or fix `application` and `region`"
        ),
        "DeploymentGroupDoesNotExistException" => format!(
            "the deployment group \"{group}\" does not exist in application \"{app}\": create it or fix `deployment_group`"
        ),
        "DeploymentGroupNameRequiredException" => {
            "set `deployment_group`: CodeDeploy needs one".to_string()
        }
        "DeploymentLimitExceededException" => format!(
            "another deployment to \"{app}\"/\"{group}\" is still in progress (DeploymentLimitExceeded): wait for it to finish or stop it, then deploy again"
        ),
        "AccessDeniedException" | "AccessDenied" => format!(
            "access denied: give these credentials codedeploy:CreateDeployment, codedeploy:GetDeployment, codedeploy:RegisterApplicationRevision and codedeploy:GetDeploymentConfig on \"{app}\" ({})",
            e.message().unwrap_or_default()
        ),
        "" => format!(
            "could not reach CodeDeploy: {} (is the endpoint right and the server up?)",
            error_chain(&e)
        ),
        _ => format!("CodeDeploy: {code}: {}", e.message().unwrap_or_default()),
    })
}

/// How often `wait_until_deployed` polls (Travis: 5 s; `RUNWAY_CODEDEPLOY_POLL` seconds).
fn poll_interval(env: &std::collections::HashMap<String, String>) -> Duration {
    env.get("RUNWAY_CODEDEPLOY_POLL")
        .cloned()
        .or_else(|| std::env::var("RUNWAY_CODEDEPLOY_POLL").ok())
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(5))
}

/// The codedeploy provider.
pub struct CodeDeploy;

impl super::Provider for CodeDeploy {
    fn describe(&self, d: &super::Deploy<'_>, opt: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let (keys, event, build_number) = (DeployKeys(d.config), d.event, d.build_number);
        let mut lines = Vec::new();
        let app = opt("application").unwrap_or_default();
        let group = opt("deployment_group").unwrap_or_default();
        let revision_type = opt("revision_type").unwrap_or_else(|| {
            if keys.has_bucket() {
                "s3".into()
            } else {
                "github".into()
            }
        });
        let description =
            opt("description").unwrap_or_else(|| format!("Deploy build {build_number} via runway"));
        let revision = if revision_type.eq_ignore_ascii_case("s3") {
            let bucket = opt("bucket").unwrap_or_default();
            let key = opt("key").unwrap_or_default();
            let bundle = opt("bundle_type")
                .unwrap_or_else(|| key.rsplit('.').next().unwrap_or("").to_string());
            format!("s3://{bucket}/{key} (bundle type {bundle})")
        } else {
            let repo = opt("repository").unwrap_or_else(|| event.repo.clone());
            let commit = opt("commit_id").unwrap_or_else(|| event.commit.clone());
            format!("github {repo}@{commit}")
        };
        lines.push(format!(
            "would create a CodeDeploy deployment of application {app}, group {group}"
        ));
        lines.push(format!("revision: {revision}"));
        lines.push(format!("description: {description}"));
        if keys.wait_until_deployed() {
            lines.push("and wait until it is deployed".into());
        }
        lines
    }

    fn deploy(
        &self,
        d: &super::Deploy<'_>,
        opts: &Options<'_>,
        env: &std::collections::HashMap<String, String>,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), DeployError> {
        let (event, build_number) = (d.event, d.build_number);
        let rt = super::runtime()?;
        let plan = CodeDeployPlan::from_options(opts, &event.commit, &event.repo, build_number)?;
        let cd_settings = aws::settings(opts, env, aws::Service::CodeDeploy)?;
        let s3_settings = aws::settings(opts, env, aws::Service::S3)?;
        let poll = poll_interval(env);
        rt.block_on(async {
            let cd_shared = aws::load(&cd_settings).await?;
            let cd = aws_sdk_codedeploy::Client::new(&cd_shared);
            let s3_shared = aws::load(&s3_settings).await?;
            let mut s3_conf = aws_sdk_s3::config::Builder::from(&s3_shared);
            if s3_settings.endpoint.is_some() {
                s3_conf = s3_conf.force_path_style(true);
            }
            let s3c = aws_sdk_s3::Client::from_conf(s3_conf.build());
            deploy(&cd, &s3c, &plan, poll, say).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s6b_bundle_type_from_key() {
        assert_eq!(bundle_type("a.zip", None).unwrap(), "zip");
        assert_eq!(bundle_type("a.tar.gz", None).unwrap(), "tgz");
        assert_eq!(bundle_type("a.tar", None).unwrap(), "tar");
        assert_eq!(bundle_type("a.bin", Some("ZIP".into())).unwrap(), "zip");
        assert!(
            bundle_type("a.bin", None)
                .unwrap_err()
                .to_string()
                .contains("Unknown bundle type")
        );
    }
}
