//! Before the lifecycle: the job's os and arch against this machine's, the runtimes it
//! asks for (found, installed, or the job errored; substitutes only when asked), then
//! `addons.apt` and `services:` inside its sandbox.

use super::{JobResult, Log, Runner, Stop, env, shell};
use shell::Wait;

/// A job the kernel killed a process of for passing its memory limit: errored, never
/// failed (the code did not fail a test; the machine was too small for it).
pub(super) fn memory_exceeded(limit: u64, log: &mut Log) -> Stop {
    limit_exceeded(
        "memory",
        limit,
        "the kernel killed a process of it",
        "job_memory in runway.toml (or --memory for runway run)",
        log,
    )
}

pub(super) fn disk_exceeded(limit: u64, log: &mut Log) -> Stop {
    limit_exceeded(
        "disk",
        limit,
        "its workspace, $HOME and the copy of the machine's changes are full",
        "job_disk in runway.toml (or --disk for runway run)",
        log,
    )
}

/// A job over its `what` limit: said in its log, and errored.
fn limit_exceeded(what: &str, limit: u64, how: &str, raise: &str, log: &mut Log) -> Stop {
    let size = crate::sandbox::cgroup::human_size(limit);
    log.line("");
    log.line(&format!(
        "The job exceeded its {what} limit ({size}): {how}."
    ));
    log.line(&format!("Raise {raise} if it needs more."));
    Stop::End(
        JobResult::Errored,
        format!("exceeded its {what} limit of {size}"),
        false,
    )
}

impl Runner<'_> {
    /// A job for another os or arch is not run here (it cannot pass); a `dist` other
    /// than this machine's is said.
    pub(super) fn check_platform(&mut self, log: &mut Log) -> Result<(), Stop> {
        use crate::runtime::platform;
        let matrix = &self.ctx.job.matrix;
        if let Some(why) = platform::mismatch(matrix, platform::host_os(), platform::host_arch()) {
            let (os, arch) = platform::wanted(matrix);
            log.line(&format!("This job is not run here: it {why}."));
            log.line(&format!(
                "A server with workers (runway.toml's worker_token_env) runs it on a machine that has it: `runway worker --label os={os} --label arch={arch}` there."
            ));
            return Err(Stop::End(
                JobResult::Errored,
                format!("not run: {why}"),
                false,
            ));
        }
        let dist = matrix
            .iter()
            .find(|(k, _)| k == "dist")
            .map(|(_, v)| v.as_str())
            .or_else(|| crate::config::views::JobKeys(&self.ctx.job.config).dist());
        if let Some(dist) = dist {
            let (pretty, code) = platform::host_dist();
            if dist != code {
                log.line(&format!(
                    "dist: {dist} asked; this machine is {pretty} (TRAVIS_DIST stays {dist})"
                ));
            }
        }
        Ok(())
    }

    /// Each runtime the job asks for, found or installed; else the job is errored with
    /// what is missing, or (`--substitutes`) runs on what the machine has, said.
    pub(super) fn provide_runtimes(
        &mut self,
        log: &mut Log,
    ) -> Result<Vec<crate::runtime::Ready>, Stop> {
        let ctx = self.ctx;
        let ws = ctx.workspace;
        let nvmrc = std::fs::read_to_string(ws.build_dir.join(".nvmrc")).ok();
        let toolchains = crate::runtime::toolchain_dir();
        let rctx = crate::runtime::Context {
            toolchains: &toolchains,
            home: &ws.home,
            copy_on_write: !ctx.options.sandbox.is_bare(),
        };
        let mut all = Vec::new();
        for want in crate::runtime::wanted(&ctx.language, &ctx.job.matrix, nvmrc.as_deref()) {
            let got = match crate::runtime::provider(want.key) {
                Some(p) => p.provide(&want.version, &rctx),
                None => Err(crate::runtime::unsupported(&want)),
            };
            match got {
                Ok(ready) => all.push(ready),
                Err(missing) if ctx.options.asked.substitutes => {
                    let instead = crate::runtime::machine_default(want.key);
                    let said = format!(
                        "Substitute: {}; with --substitutes this job runs on the machine's own instead: {instead}",
                        missing.what
                    );
                    log.styled_line(&said, &format!("\x1b[33m{said}\x1b[0m"));
                    self.substituted
                        .push(format!("{} {} → {instead}", want.key, want.version));
                    // Travis's variable still says what the job asked for.
                    if let Some(var) = env::version_var(want.key) {
                        all.push(crate::runtime::Ready {
                            env: vec![(var.to_string(), want.version.clone())],
                            what: format!("the machine's own for {} {}", want.key, want.version),
                            ..Default::default()
                        });
                    }
                }
                Err(missing) => {
                    let said = format!("runway cannot run this job as asked: {}", missing.what);
                    log.styled_line(&said, &format!("\x1b[31m{said}\x1b[0m"));
                    log.line(&format!("To provide it: {}.", missing.how));
                    log.line("To rehearse on what this machine has instead: --substitutes (runway.toml: substitutes = true).");
                    return Err(Stop::End(JobResult::Errored, missing.what, false));
                }
            }
        }
        Ok(all)
    }

    /// Puts a provided runtime first on `PATH`, exports its variables, and shows its
    /// versions, as Travis's language setup printed them.
    pub(super) fn use_runtime(
        &mut self,
        ready: &crate::runtime::Ready,
        log: &mut Log,
    ) -> Result<(), Stop> {
        log.line(&format!("Runtime: {}", ready.what));
        let mut exports: Vec<String> = Vec::new();
        if !ready.path.is_empty() {
            let dirs: Vec<String> = ready
                .path
                .iter()
                .map(|p| crate::process::quote(&p.display().to_string()))
                .collect();
            exports.push(format!("export PATH={}:\"$PATH\"", dirs.join(":")));
        }
        for (k, v) in &ready.env {
            exports.push(format!("export {k}={}", crate::process::quote(v)));
        }
        for e in &exports {
            log.line(&format!("$ {e}"));
            self.silent(e)?;
        }
        self.verify_runtime(ready, log)?;
        for cmd in &ready.announce {
            self.shown(cmd, log)?;
        }
        for (cmd, said) in &ready.known {
            log.line(&format!("$ {cmd}"));
            log.line(said);
        }
        log.line("");
        Ok(())
    }

    /// Never a false green: each command a runtime put on `PATH` is found by the job's
    /// own shell where the runtime put it (a toolchain directory on a filesystem the
    /// sandbox does not carry, say, leaves the machine's own `node` to run instead).
    /// When it is not, the job is errored with where the shell finds it.
    fn verify_runtime(&mut self, ready: &crate::runtime::Ready, log: &mut Log) -> Result<(), Stop> {
        for (cmd, at) in &ready.expect {
            let at = crate::process::quote(&at.display().to_string());
            let check = format!("[ \"$(command -v {cmd})\" = {at} ] && [ -x {at} ]");
            if self.silent(&check)? == 0 {
                continue;
            }
            let said = format!(
                "runway cannot run this job as asked: {} was set up, but the job's shell does not find `{cmd}` at {at}",
                ready.what
            );
            log.styled_line(&said, &format!("\x1b[31m{said}\x1b[0m"));
            self.shown(
                &format!("command -v {cmd} || echo \"no {cmd} on PATH\""),
                log,
            )?;
            log.line("To provide it: keep runway's toolchain directory (RUNWAY_TOOLCHAINS) and the runtimes on the filesystem of / (the job's sandbox is a copy of / and carries no other mount), or run with --sandbox none.");
            return Err(Stop::End(
                JobResult::Errored,
                format!(
                    "the runtime set up ({}) is not what the job's shell runs as `{cmd}`",
                    ready.what
                ),
                false,
            ));
        }
        Ok(())
    }

    /// `addons.apt` packages installed and `services:` started in the job's sandbox,
    /// before `before_install`; a failure errors the job with what failed.
    pub(super) fn setup_addons(&mut self, log: &mut Log) -> Result<(), Stop> {
        use crate::runtime::services;
        let config = &self.ctx.job.config;
        let keys = crate::config::views::JobKeys(config);
        for addon in keys.other_addons() {
            let said = format!(
                "warning: runway does not provide the {addon} addon; this job runs without it"
            );
            log.styled_line(&said, &format!("\x1b[33m{said}\x1b[0m"));
        }
        let apt = keys.apt();
        let wanted_services = keys.services();
        if apt.packages.is_empty() && apt.sources.is_empty() && wanted_services.is_empty() {
            return Ok(());
        }
        if self.ctx.options.sandbox.is_bare() {
            let why = "addons.apt and services: change the machine, so runway runs them only inside a job sandbox (not with --sandbox none)";
            log.line(&format!("runway cannot run this job as asked: {why}."));
            return Err(Stop::End(JobResult::Errored, why.into(), false));
        }
        let aliases: Vec<&str> = apt
            .sources
            .iter()
            .filter(|s| matches!(s, services::Source::Alias(_)))
            .map(|s| s.name())
            .collect();
        if !aliases.is_empty() {
            let what = format!(
                "addons.apt.sources ({}) are Travis's aliases for Ubuntu archives, which runway does not add",
                aliases.join(", ")
            );
            if self.ctx.options.asked.substitutes {
                let said = format!(
                    "Substitute: {what}; with --substitutes the packages come from this machine's own sources"
                );
                log.styled_line(&said, &format!("\x1b[33m{said}\x1b[0m"));
                self.substituted.push(format!(
                    "addons.apt.sources {} → this machine's sources",
                    aliases.join(", ")
                ));
            } else {
                log.line(&format!("runway cannot run this job as asked: {what}."));
                log.line("To provide them: give the source as a sourceline (deb …) with its key_url, or use packages this machine's sources have; --substitutes rehearses without them.");
                return Err(Stop::End(JobResult::Errored, what, false));
            }
        }
        let mut steps: Vec<(&str, services::SetupCommand)> =
            services::source_commands(&apt.sources)
                .into_iter()
                .map(|c| ("apt", c))
                .collect();
        if !apt.packages.is_empty() {
            steps.push(("apt", services::apt_command(&apt.packages)));
        }
        for s in &wanted_services {
            steps.push(("services", services::service_command(s)));
        }
        for (fold, step) in steps {
            let timer = log.command_fold_start(fold);
            let code = self.shown_code(&step.command, log)?;
            log.fold_end(timer);
            if code != 0 {
                log.line(&format!(
                    "The command \"{}\" failed and exited with {code}.",
                    step.command
                ));
                return Err(Stop::End(JobResult::Errored, step.fails_as, false));
            }
        }
        log.line("");
        Ok(())
    }

    /// Runs a command of runway's in the job shell, showing it and what it prints;
    /// its exit code does not change the job.
    pub(super) fn shown(&mut self, cmd: &str, log: &mut Log) -> Result<(), Stop> {
        self.shown_code(cmd, log).map(drop)
    }

    /// As [`Runner::shown`], returning the command's exit code.
    pub(super) fn shown_code(&mut self, cmd: &str, log: &mut Log) -> Result<i32, Stop> {
        let opts = self.ctx.options;
        log.line(&format!("$ {cmd}"));
        let sh = self.shell.as_mut().expect("shell started");
        if let Err(e) = sh.send(cmd) {
            return Err(Stop::End(JobResult::Errored, format!("runner: {e}"), false));
        }
        let waited = sh.wait(opts.asked.no_output_timeout, opts.asked.timeout, &mut |b| {
            log.output(b);
            true
        });
        log.end_output();
        match waited {
            Wait::Done(code) => Ok(code),
            other => Err(self.stop_for(other)),
        }
    }
}
