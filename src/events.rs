//! What happens in a build, as data, and its two renderings: lines of text for people
//! (a terminal, a file or pipe, the server's build log) and JSON for programs
//! (`runway run --json`, one object per line). Every sink renders an event here and
//! nowhere else; both renderings are snapshot-tested. The jobs' own logs are not
//! events: they stream as Travis's log format (folds and timings), beside these.

use crate::build::{BuildReport, Progress};
use crate::event::BuildEvent;
use crate::job::log::human;

/// What the service tells its caller while a build runs.
#[derive(Clone, Copy)]
pub enum Event<'a> {
    /// A problem with what was asked (a config diagnostic, a sandbox that cannot be
    /// made): standard error for a person at a terminal.
    Problem(&'a str),
    /// A line about the build for its log (the sandbox chosen, orphans ended, the
    /// mail's SMTP exchange).
    Note(&'a str),
    /// The build's jobs start.
    Started {
        /// The build's number.
        number: u64,
        /// What triggered it.
        trigger: &'a BuildEvent,
        /// How many of its jobs run here.
        jobs: usize,
        /// Why it runs.
        reason: &'a str,
    },
    /// The build does not run, and why (its own conditions, `[skip ci]`).
    NotBuilt {
        /// Why.
        reason: &'a str,
    },
    /// What the build says beside its jobs' logs (stages, jobs not started).
    Progress(Progress<'a>),
    /// The jobs ended: the summary.
    Ended {
        /// The build's number.
        number: u64,
        /// Its jobs and state.
        report: &'a BuildReport,
    },
    /// The build's end could not be recorded.
    NotRecorded {
        /// What the store said.
        error: &'a str,
    },
    /// Another serve node ends the build.
    HandedOver(Handover),
    /// What became of the build's mail.
    Mail(&'a MailFate),
    /// The build's last line, which agrees with the exit code.
    Finished {
        /// The build's number.
        number: u64,
        /// Its jobs and state.
        report: &'a BuildReport,
    },
}

/// Why another serve node ends a build this one ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// This node is stopping and handed the build over.
    Stopping,
    /// Another node took the build over (this one was thought gone).
    TakenOver,
}

/// What became of a build's mail: said as `Email: …` in its log (see its `Display`)
/// and kept on the build's page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailFate {
    /// The config asks for none (`email: false`, no recipient configured).
    Off(String),
    /// None this time: why (the policy, `on_success: change`…).
    NotThisTime(String),
    /// A rehearsal: what would be sent.
    WouldSend {
        /// Its subject.
        subject: String,
        /// `a@x, b@y`.
        recipients: String,
        /// Its text, when asked to show it (shown below the fate's line).
        text: Option<String>,
    },
    /// Sent.
    Sent {
        /// Its subject.
        subject: String,
        /// `a@x, b@y`.
        recipients: String,
    },
    /// Not sent now; the server's outbox tries again later.
    Kept(String),
    /// Not sent, and not kept: why.
    Failed(String),
}

impl MailFate {
    /// Its kind, one word: `off`, `not_this_time`, `would_send`, `sent`, `kept`,
    /// `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            MailFate::Off(_) => "off",
            MailFate::NotThisTime(_) => "not_this_time",
            MailFate::WouldSend { .. } => "would_send",
            MailFate::Sent { .. } => "sent",
            MailFate::Kept(_) => "kept",
            MailFate::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for MailFate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MailFate::Off(why) => write!(f, "none ({why})"),
            MailFate::NotThisTime(why) => write!(f, "not sent ({why})"),
            MailFate::WouldSend {
                subject,
                recipients,
                text,
            } => write!(
                f,
                "would send \"{subject}\" to {recipients} (runway run mails only with --notify{})",
                if text.is_some() {
                    ""
                } else {
                    "; --show-mail shows it"
                }
            ),
            MailFate::Sent {
                subject,
                recipients,
            } => write!(f, "sent \"{subject}\" to {recipients}"),
            MailFate::Kept(error) => {
                write!(f, "not sent yet ({error}); runway serve tries again later")
            }
            MailFate::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// The lines a person reads for `event` (for [`Event::Problem`], its text: the
/// caller puts it on standard error or in the log).
pub fn lines(event: &Event<'_>) -> Vec<String> {
    match *event {
        Event::Problem(text) | Event::Note(text) => vec![text.to_string()],
        Event::Started {
            number,
            trigger,
            jobs,
            reason,
        } => vec![format!(
            "runway: build #{number} of {} ({} {}), {jobs} job(s): {reason}",
            trigger.repo,
            if trigger.tag.is_some() {
                "tag"
            } else {
                "branch"
            },
            trigger.travis_branch(),
        )],
        Event::NotBuilt { reason } => vec![format!("Nothing to build: {reason}.")],
        Event::Progress(Progress::Stage { name }) => {
            vec![String::new(), format!("=== Stage: {name} ===")]
        }
        Event::Progress(Progress::NotStarted { job, why }) => {
            vec![format!("Job {job} canceled: {why}")]
        }
        Event::Progress(Progress::FastFinish) => {
            vec!["fast_finish: a required job did not pass; the build result is known".into()]
        }
        Event::Ended { report, .. } => summary(report),
        Event::NotRecorded { error } => {
            vec![format!("warning: could not record the build: {error}")]
        }
        Event::HandedOver(Handover::Stopping) => {
            vec!["runway: this node is stopping: another node ends the build".into()]
        }
        Event::HandedOver(Handover::TakenOver) => {
            vec!["runway: another node took the build over and ends it".into()]
        }
        Event::Mail(fate) => {
            let mut out = vec![format!("Email: {fate}")];
            if let MailFate::WouldSend {
                text: Some(text), ..
            } = fate
            {
                out.extend(text.lines().map(|l| format!("  | {l}")));
            }
            out
        }
        Event::Finished { number, report } => vec![last_line(number, report)],
    }
}

/// What happened in job `job`, for a program: one JSON object.
pub fn job_json(job: &str, event: &crate::job::log::JobEvent<'_>) -> serde_json::Value {
    use crate::job::log::{DeployOutcome, JobEvent};
    use serde_json::json;
    match *event {
        JobEvent::CommandStarted { command } => json!({
            "event": "command_started",
            "job": job,
            "command": command,
        }),
        JobEvent::CommandEnded {
            command,
            status,
            duration,
        } => json!({
            "event": "command_ended",
            "job": job,
            "command": command,
            "status": status,
            "duration_ms": duration.as_millis() as u64,
        }),
        JobEvent::SectionEnded { name, duration } => json!({
            "event": "section_ended",
            "job": job,
            "name": name,
            "duration_ms": duration.as_millis() as u64,
        }),
        JobEvent::Deploy { provider, outcome } => {
            let (what, why) = match outcome {
                DeployOutcome::Deployed => ("deployed", None),
                DeployOutcome::DryRun => ("dry_run", None),
                DeployOutcome::Skipped(why) => ("skipped", Some(why)),
                DeployOutcome::Failed(why) => ("failed", Some(why)),
            };
            json!({
                "event": "deploy",
                "job": job,
                "provider": provider,
                "outcome": what,
                "reason": why,
            })
        }
    }
}

/// `event` for a program: one JSON object, its kind under `"event"`.
pub fn json(event: &Event<'_>) -> serde_json::Value {
    use serde_json::json;
    match *event {
        Event::Problem(text) => json!({ "event": "problem", "text": text }),
        Event::Note(text) => json!({ "event": "note", "text": text }),
        Event::Started {
            number,
            trigger,
            jobs,
            reason,
        } => json!({
            "event": "started",
            "build": number,
            "repo": trigger.repo,
            "branch": trigger.branch,
            "tag": trigger.tag,
            "type": trigger.event.as_str(),
            "commit": trigger.commit,
            "jobs": jobs,
            "reason": reason,
        }),
        Event::NotBuilt { reason } => json!({ "event": "not_built", "reason": reason }),
        Event::Progress(Progress::Stage { name }) => json!({ "event": "stage", "name": name }),
        Event::Progress(Progress::NotStarted { job, why }) => {
            json!({ "event": "job_not_started", "job": job, "reason": why })
        }
        Event::Progress(Progress::FastFinish) => json!({ "event": "fast_finish" }),
        Event::Ended { number, report } => json!({
            "event": "ended",
            "build": number,
            "state": report.state.as_str(),
            "jobs": report.jobs.iter().map(|r| json!({
                "number": r.job.number,
                "name": r.job.name,
                "stage": r.job.stage,
                "matrix": r.job.matrix.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "allow_failure": r.job.allow_failure,
                "result": r.outcome.result.as_str(),
                "reason": r.outcome.reason,
                "duration_ms": r.outcome.duration.as_millis() as u64,
                "started": r.started,
                "substituted": r.outcome.substituted,
            })).collect::<Vec<_>>(),
        }),
        Event::NotRecorded { error } => json!({ "event": "not_recorded", "error": error }),
        Event::HandedOver(h) => json!({
            "event": "handed_over",
            "why": match h {
                Handover::Stopping => "stopping",
                Handover::TakenOver => "taken_over",
            },
        }),
        Event::Mail(fate) => json!({
            "event": "mail",
            "fate": fate.kind(),
            "text": fate.to_string(),
        }),
        Event::Finished { number, report } => json!({
            "event": "finished",
            "build": number,
            "state": report.state.as_str(),
            "timed_out": report.timed_out,
            "duration_ms": report.duration.as_millis() as u64,
            "jobs": report.jobs.len(),
            "on_substitutes": report.jobs.iter().any(|j| !j.outcome.substituted.is_empty()),
            "exit_code": report.exit_code(),
            "line": last_line(number, report),
        }),
    }
}

/// The summary: one line per job, then the build's (which agrees with the exit code).
pub fn summary(report: &BuildReport) -> Vec<String> {
    let mut lines = vec![String::new(), "── Summary".to_string()];
    for r in &report.jobs {
        let m: Vec<String> = r
            .job
            .matrix
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let name = r
            .job
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        lines.push(format!(
            "Job {}{name}{}: {}{} in {} ({})",
            r.job.number,
            if m.is_empty() {
                String::new()
            } else {
                format!(" ({})", m.join(", "))
            },
            r.outcome.result.as_str(),
            if r.job.allow_failure {
                " (allowed to fail)"
            } else {
                ""
            },
            human(r.outcome.duration),
            r.outcome.reason
        ));
    }
    lines
}

/// The build's last line.
pub fn last_line(number: u64, report: &BuildReport) -> String {
    let on_substitutes = report
        .jobs
        .iter()
        .any(|j| !j.outcome.substituted.is_empty());
    format!(
        "Build #{number} {}{} in {} ({} job(s))",
        report.state.as_str(),
        if on_substitutes {
            " on substitutes (not what .travis.yml asks for)"
        } else {
            ""
        },
        human(report.duration),
        report.jobs.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{BuildState, JobReport};
    use crate::config::diag::Pos;
    use crate::config::yaml::{Node, Value};
    use crate::job::{JobOutcome, JobResult};
    use crate::plan::JobPlan;
    use std::time::Duration;

    fn job(number: &str, stage: &str, result: JobResult, ms: u64, started: bool) -> JobReport {
        JobReport {
            job: JobPlan {
                number: number.into(),
                name: (number == "7.3").then(|| "docs".into()),
                stage: stage.into(),
                matrix: vec![("python".into(), "3.12".into())],
                env: Vec::new(),
                allow_failure: number == "7.2",
                deploys: Vec::new(),
                config: Node::new(Pos { line: 1, col: 1 }, Value::Null),
            },
            outcome: JobOutcome {
                result,
                reason: match result {
                    JobResult::Passed => "script passed".into(),
                    JobResult::Failed => "script exited with 1".into(),
                    _ => "a required job of stage test did not pass".into(),
                },
                timed_out: false,
                duration: Duration::from_millis(ms),
                substituted: Vec::new(),
            },
            log: Vec::new(),
            times: Vec::new(),
            stage_canceled: !started,
            started,
        }
    }

    /// One build's events, from its start to its last line: a failed required job,
    /// an allowed failure, a later stage not started, a mail not sent.
    fn with_a_build(f: impl FnOnce(&[Event<'_>])) {
        let trigger = BuildEvent {
            repo: "o/app".into(),
            branch: Some("main".into()),
            commit: "abc1234".into(),
            ..BuildEvent::default()
        };
        let report = BuildReport {
            state: BuildState::Failed,
            jobs: vec![
                job("7.1", "test", JobResult::Failed, 2_500, true),
                job("7.2", "test", JobResult::Failed, 900, true),
                job("7.3", "deploy", JobResult::Canceled, 0, false),
            ],
            duration: Duration::from_millis(3_600),
            timed_out: false,
        };
        let fate = MailFate::NotThisTime("failed, but on_failure: never".into());
        f(&[
            Event::Problem(".travis.yml:3:1: warning: unknown key \"scirpt\""),
            Event::Started {
                number: 7,
                trigger: &trigger,
                jobs: 3,
                reason: "branch main is built",
            },
            Event::Progress(Progress::Stage { name: "test" }),
            Event::Progress(Progress::FastFinish),
            Event::Progress(Progress::Stage { name: "deploy" }),
            Event::Progress(Progress::NotStarted {
                job: "7.3",
                why: "a required job of stage test did not pass",
            }),
            Event::Ended {
                number: 7,
                report: &report,
            },
            Event::NotRecorded {
                error: "database is locked",
            },
            Event::Mail(&fate),
            Event::Finished {
                number: 7,
                report: &report,
            },
            Event::HandedOver(Handover::Stopping),
            Event::NotBuilt {
                reason: "the commit message says [skip ci]",
            },
        ])
    }

    #[test]
    fn a_build_rendered_for_people() {
        with_a_build(|events| {
            let text: Vec<String> = events.iter().flat_map(|e| lines(e)).collect();
            insta::assert_snapshot!(text.join("\n"));
        });
    }

    /// What happens inside a job, for programs: a command, a section, each deploy
    /// outcome.
    #[test]
    fn a_jobs_events_rendered_for_programs() {
        use crate::job::log::{DeployOutcome, JobEvent};
        let events = [
            JobEvent::SectionEnded {
                name: "git.checkout",
                duration: Duration::from_millis(120),
            },
            JobEvent::CommandStarted {
                command: "make test TOKEN=[secure]",
            },
            JobEvent::CommandEnded {
                command: "make test TOKEN=[secure]",
                status: 2,
                duration: Duration::from_millis(4_250),
            },
            JobEvent::Deploy {
                provider: "s3",
                outcome: DeployOutcome::DryRun,
            },
            JobEvent::Deploy {
                provider: "codedeploy",
                outcome: DeployOutcome::Skipped("this branch is not permitted: feature"),
            },
            JobEvent::Deploy {
                provider: "s3",
                outcome: DeployOutcome::Deployed,
            },
            JobEvent::Deploy {
                provider: "codedeploy",
                outcome: DeployOutcome::Failed("the deployment group does not exist"),
            },
        ];
        let text: Vec<String> = events
            .iter()
            .map(|e| job_json("7.1", e).to_string())
            .collect();
        insta::assert_snapshot!(text.join("\n"));
    }

    #[test]
    fn a_build_rendered_for_programs() {
        with_a_build(|events| {
            let text: Vec<String> = events.iter().map(|e| json(e).to_string()).collect();
            insta::assert_snapshot!(text.join("\n"));
        });
    }
}
