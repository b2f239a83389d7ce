//! The job's deploy step (docs/semantics.md §6): for each provider whose conditions
//! fire, `before_deploy`, the provider (a dry run that says what it would do, or for
//! real with `--deploy`, through [`crate::deploy::Provider`]), the codedeploy bundle
//! rehearsed when asked, then `after_deploy`.

use std::collections::HashMap;
use std::path::Path;

use super::log::{DeployOutcome, JobEvent, Log};
use super::phases::Phase;
use super::{JobResult, Runner, Stop};
use crate::config::views::{DeployKeys, JobKeys};
use crate::deploy;

/// The most of a job's environment a deploy reads (16 MiB: far past what `exec` takes).
const ENV_DUMP_CAP: u64 = 16 << 20;

impl Runner<'_> {
    pub(super) fn deploys(&mut self, log: &mut Log) -> Result<(), Stop> {
        let deploys = &self.ctx.job.deploys;
        if deploys.is_empty() {
            return Ok(());
        }
        for d in deploys {
            if !d.fires {
                log.line(&format!(
                    "Skipping a deployment with the {} provider because {}",
                    d.provider, d.reason
                ));
                log.event(JobEvent::Deploy {
                    provider: &d.provider,
                    outcome: DeployOutcome::Skipped(&d.reason),
                });
                continue;
            }
            let keys = DeployKeys(&d.config);
            let cond = keys.on().conditions();
            if !cond.is_empty() {
                let test = cond
                    .iter()
                    .map(|c| format!("[[ {c} ]]"))
                    .collect::<Vec<_>>()
                    .join(" && ");
                if self.silent(&test)? != 0 {
                    log.line(&format!(
                        "Skipping a deployment with the {} provider because a custom condition was not met",
                        d.provider
                    ));
                    log.event(JobEvent::Deploy {
                        provider: &d.provider,
                        outcome: DeployOutcome::Skipped("a custom condition was not met"),
                    });
                    continue;
                }
            }
            let before = JobKeys(&self.ctx.job.config).before_deploy();
            let allow_failure = keys.allow_failure();
            if let Err(stop) = self.run_commands(Phase::BeforeDeploy, &before, log) {
                if !allow_failure {
                    return Err(stop);
                }
                log.line(&format!("before_deploy failed; the {} provider has allow_failure: true, so the job goes on", d.provider));
                continue;
            }
            if !self.ctx.options.asked.deploy {
                self.dry_run(d, log);
                log.event(JobEvent::Deploy {
                    provider: &d.provider,
                    outcome: DeployOutcome::DryRun,
                });
                self.rehearse_bundle(d, log)?;
                continue;
            }
            let cleanup = keys.cleanup();
            if cleanup {
                log.line("$ git stash --all");
                self.silent("git stash --all >/dev/null 2>&1 || true")?;
            }
            let fold = log.fold_start(
                &format!("dpl.{}", d.provider),
                &format!("deploy: {}", d.provider),
            );
            log.line(&format!("Deploying with the {} provider", d.provider));
            let result = self.provider(d, log);
            log.fold_end(fold);
            if cleanup {
                self.silent("git stash pop >/dev/null 2>&1 || true")?;
            }
            let why = result.as_ref().err().map(|e| e.to_string());
            log.event(JobEvent::Deploy {
                provider: &d.provider,
                outcome: match &why {
                    None => DeployOutcome::Deployed,
                    Some(why) => DeployOutcome::Failed(why),
                },
            });
            match result {
                Ok(()) => {
                    self.rehearse_bundle(d, log)?;
                    let after = JobKeys(&self.ctx.job.config).after_deploy();
                    self.run_commands(Phase::AfterDeploy, &after, log)?;
                    let run = keys.run();
                    self.run_commands(Phase::AfterDeploy, &run, log)?;
                }
                Err(e) => {
                    log.line(&format!(
                        "Failed to deploy with the {} provider: {e}",
                        d.provider
                    ));
                    if allow_failure {
                        log.line(&format!(
                            "The {} provider has allow_failure: true; the job goes on.",
                            d.provider
                        ));
                        continue;
                    }
                    return Err(Stop::End(
                        JobResult::Errored,
                        format!("deploy ({}) failed: {e}", d.provider),
                        false,
                    ));
                }
            }
        }
        Ok(())
    }

    /// `--rehearse-deploy`: the bundle the codedeploy provider ships (its `key`, found in
    /// the workspace), deployed on a throwaway copy of the machine as the agent would;
    /// a failed rehearsal errors the job.
    fn rehearse_bundle(&mut self, d: &crate::plan::DeployPlan, log: &mut Log) -> Result<(), Stop> {
        if !self.ctx.options.asked.rehearse_deploy || d.provider != "codedeploy" {
            return Ok(());
        }
        let fail = |why: String| Stop::End(JobResult::Errored, why, false);
        let keys = DeployKeys(&d.config);
        let key = keys.key().unwrap_or_default();
        let name = std::path::Path::new(key)
            .file_name()
            .map(|n| n.to_os_string());
        let build = &self.ctx.workspace.build_dir;
        // Found and opened beneath the build directory, following no link: the file is
        // then read through its descriptor, whatever the job does to the path.
        let top = crate::beneath::Beneath::open(build).ok();
        let bundle = name.as_ref().and_then(|n| {
            let top = top.as_ref()?;
            let (rel, _) = top
                .walk()
                .ok()?
                .into_iter()
                .find(|(rel, meta)| meta.is_file() && rel.file_name() == Some(n.as_os_str()))?;
            let file = top.file(&rel).ok()?;
            Some((build.join(&rel), file))
        });
        let fold = log.fold_start("dpl.rehearse", "rehearse: codedeploy");
        let Some((bundle, file)) = bundle else {
            log.line(&format!(
                "runway cannot rehearse the deployment: no file named \"{key}\" (codedeploy key) in the workspace"
            ));
            log.fold_end(fold);
            return Err(fail(format!(
                "deploy rehearsal: no bundle \"{key}\" in the workspace"
            )));
        };
        log.line(&format!(
            "Rehearsing {} as the CodeDeploy agent would deploy it, on a throwaway copy of this machine",
            bundle.display()
        ));
        // A copy of the machine like the job's (the same hidden paths), in its own
        // network namespace: the services it starts (nginx on port 80, say) never meet
        // another job's.
        let sandbox = self.ctx.options.sandbox.rehearsal();
        let opts = crate::deploy::rehearse::RehearseOptions {
            application: keys.application().unwrap_or("application").to_string(),
            group: keys
                .deployment_group()
                .unwrap_or("deployment-group")
                .to_string(),
            sandbox,
            hold: false,
        };
        let mut said = Vec::new();
        let bundle = crate::deploy::rehearse::Bundle {
            shown: bundle,
            file: Some(file),
        };
        let result = crate::deploy::rehearse::rehearse_bundles(&[bundle], &opts, &mut said);
        for line in String::from_utf8_lossy(&said).lines() {
            log.line(line);
        }
        log.fold_end(fold);
        match result {
            Ok(0) => Ok(()),
            Ok(_) => {
                let why = String::from_utf8_lossy(&said)
                    .lines()
                    .rfind(|l| l.starts_with("Rehearsal failed"))
                    .unwrap_or("the rehearsal failed")
                    .to_string();
                Err(fail(format!("deploy rehearsal: {why}")))
            }
            Err(e) => Err(fail(format!("deploy rehearsal: {e}"))),
        }
    }

    /// Shows what a provider would do (no `--deploy`).
    fn dry_run(&mut self, d: &crate::plan::DeployPlan, log: &mut Log) {
        let fold = log.fold_start(
            &format!("dpl.{}", d.provider),
            &format!("deploy: {}", d.provider),
        );
        log.line(&format!(
            "Deploying with the {} provider (dry run: runway run deploys only with --deploy)",
            d.provider
        ));
        for line in deploy::describe(
            &d.config,
            &self.ctx.workspace.build_dir,
            &self.ctx.job.env,
            &self.ctx.settings.vars(),
            self.ctx.event,
            self.ctx.build_number,
        ) {
            log.line(&format!("  {line}"));
        }
        log.fold_end(fold);
        // Said only when there is an after_deploy to skip.
        if !JobKeys(&self.ctx.job.config).after_deploy().is_empty() {
            log.line(&format!(
                "Skipping after_deploy of the {} provider: nothing was deployed",
                d.provider
            ));
        }
    }

    /// Runs a provider for real with the job shell's current environment, streaming its
    /// lines into the log.
    fn provider(
        &mut self,
        d: &crate::plan::DeployPlan,
        log: &mut Log,
    ) -> Result<(), deploy::DeployError> {
        let env_file = self.ctx.workspace.scratch.join("deploy-env");
        let dump = format!(
            "env -0 > {}",
            crate::process::quote(&env_file.to_string_lossy())
        );
        if self.silent(&dump).is_err() {
            return Err(deploy::DeployError::Failed(
                "could not read the job's environment".into(),
            ));
        }
        // The job can write its scratch directory: read the dump through a descriptor
        // that follows no link and stays beneath it, and no more than an environment
        // can hold.
        let scratch = crate::beneath::Beneath::open(&self.ctx.workspace.scratch);
        let raw = scratch
            .as_ref()
            .ok()
            .and_then(|d| d.read_capped(Path::new("deploy-env"), ENV_DUMP_CAP).ok())
            .unwrap_or_default();
        if let Ok(d) = &scratch {
            let _ = d.remove("deploy-env");
        }
        let env: HashMap<String, String> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let ctx = self.ctx;
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let tx = std::sync::Mutex::new(tx);
                let say = |line: String| {
                    let _ = tx.lock().expect("deploy log").send(line);
                };
                deploy::run(
                    &d.config,
                    &env,
                    &ctx.workspace.build_dir,
                    ctx.event,
                    ctx.build_number,
                    &say,
                )
            });
            for line in rx {
                log.line(&line);
            }
            worker.join().unwrap_or_else(|_| {
                Err(deploy::DeployError::Failed("the provider panicked".into()))
            })
        })
    }
}
