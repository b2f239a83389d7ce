//! A build's one mail: decided by the config's email policy, composed from the build's
//! facts ([`crate::notify`]), then sent, written to a directory, shown, or (a rehearsal)
//! only described. A mail that cannot be sent is kept in the outbox for the server to
//! retry when the build is the server's; it never changes the build's exit code.

use std::path::PathBuf;

use crate::build::{BuildReport, BuildState, JobReport};
use crate::event::BuildEvent;
use crate::job::JobResult;
use crate::mask::Masker;
use crate::notify::{self, MailFacts, MailJob, SmtpConfig};
use crate::plan::Plan;
use crate::store::{Status, Store};

pub use crate::events::MailFate;

/// Whether and how a build's mail goes.
#[derive(Clone, Debug, Default)]
pub struct MailOptions {
    /// Send it (else a rehearsal says what it would send).
    pub send: bool,
    /// Write it as `build-N.eml` into this directory.
    pub dir: Option<PathBuf>,
    /// Show its text.
    pub show: bool,
    /// The mail server (default: `RUNWAY_SMTP_URL`/`RUNWAY_SMTP_FROM`).
    pub smtp: Option<SmtpConfig>,
    /// The server's URL, for the link to the build page (default: `RUNWAY_PUBLIC_URL`).
    pub public_url: Option<String>,
}

/// What each deploy of a job did, or why it was skipped (`s3: dry run (no --deploy)`).
pub fn deploy_lines(r: &JobReport, deployed: bool, rehearsed: bool) -> Vec<String> {
    let passed = r.outcome.result == JobResult::Passed;
    r.job
        .deploys
        .iter()
        .map(|d| {
            let did = if !d.fires {
                format!("skipped ({})", d.reason)
            } else if !passed {
                "not run (the job did not pass)".to_string()
            } else if deployed {
                "deployed".to_string()
            } else {
                "dry run (no --deploy)".to_string()
            };
            // A passed job's rehearsal succeeded (a failed one errors the job).
            let rehearsal = if rehearsed && d.provider == "codedeploy" && d.fires && passed {
                "; the bundle rehearsed as the agent would deploy it: succeeded"
            } else {
                ""
            };
            format!("{}: {did}{rehearsal}", d.provider)
        })
        .collect()
}

/// One build's mail, with what it is made of.
pub struct Mailing<'a> {
    /// The plan (the email policy, each job's deploys).
    pub plan: &'a Plan,
    /// The event built.
    pub event: &'a BuildEvent,
    /// How it ended.
    pub report: &'a BuildReport,
    /// Its number.
    pub number: u64,
    /// The previous finished build's state on its branch.
    pub previous: Option<Status>,
    /// Why it errored before any job ran.
    pub error: Option<&'a str>,
    /// Hides the settings' secrets.
    pub masker: &'a Masker,
    /// Whether and how to send.
    pub options: &'a MailOptions,
    /// The deploys ran for real.
    pub deployed: bool,
    /// The codedeploy bundles were rehearsed.
    pub rehearsed: bool,
    /// Where a mail that could not be sent waits for a retry (the server's builds).
    pub outbox: Option<(&'a mut Store, i64)>,
    /// When the build started (Unix seconds), when it started before this process
    /// followed it (a build taken over from another node): the mail's duration counts
    /// from then, not from the take-over.
    pub started_at: Option<i64>,
}

impl Mailing<'_> {
    /// Decides, composes and sends (or shows) the mail; says what it does on the way
    /// (warnings, the SMTP exchange, the text when shown) and returns its fate, which
    /// the caller reports.
    pub fn send(self, say: &mut dyn FnMut(&str)) -> MailFate {
        let policy = &self.plan.notifications.email;
        let (to, bad) = notify::split_recipients(&policy.recipients);
        for b in &bad {
            say(&format!(
                "warning: email recipient \"{b}\" is not an email address; it is skipped"
            ));
        }
        if !policy.enabled {
            return MailFate::Off(policy.reason.clone());
        }
        let state = self.report.state;
        if !notify::should_send(policy, state, self.previous) || to.is_empty() {
            return MailFate::NotThisTime(self.why_not(to.is_empty()));
        }
        let facts = self.facts();
        let smtp = self
            .options
            .smtp
            .clone()
            .map(Ok)
            .unwrap_or_else(SmtpConfig::from_env);
        let from = smtp.as_ref().map(|c| c.from.clone()).unwrap_or_else(|_| {
            "runway <runway@localhost>"
                .parse()
                .expect("a valid default sender")
        });
        let message = match notify::message(&from, &to, &facts) {
            Ok(m) => m,
            Err(e) => return MailFate::Failed(format!("could not compose the message: {e}")),
        };
        if let Some(dir) = &self.options.dir {
            let path = dir.join(format!("build-{}.eml", self.number));
            match std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(&path, message.formatted()))
            {
                Ok(()) => say(&format!("Email: written to {}", path.display())),
                Err(e) => say(&format!("Email: could not write {}: {e}", path.display())),
            }
        }
        let recipients = to
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if !self.options.send {
            return self.describe(&facts, recipients);
        }
        match smtp {
            Ok(cfg) => self.deliver(&cfg, &message, notify::subject(&facts), recipients, say),
            Err(e) => MailFate::Failed(format!("not sent: {e}")),
        }
    }

    /// Why no mail goes although the policy is on.
    fn why_not(&self, no_recipient: bool) -> String {
        if no_recipient {
            return "no recipient".to_string();
        }
        let policy = &self.plan.notifications.email;
        let state = self.report.state;
        let (on, frequency) = if state == BuildState::Passed {
            ("success", &policy.on_success)
        } else {
            ("failure", &policy.on_failure)
        };
        format!("{} with on_{on}: {}", state.as_str(), frequency.as_str())
    }

    /// What the mail says.
    fn facts(&self) -> MailFacts {
        let public_url = self
            .options
            .public_url
            .clone()
            .or_else(|| std::env::var("RUNWAY_PUBLIC_URL").ok());
        let mut facts = MailFacts::about(
            self.event,
            self.number,
            (self.report.state, self.previous),
            self.masker,
            public_url.as_deref(),
        );
        facts.seconds = self.report.duration.as_secs_f64();
        if let Some(started) = self.started_at {
            let since = (crate::store::Store::now() - started).max(0) as f64;
            facts.seconds = facts.seconds.max(since);
        }
        facts.jobs = self.jobs();
        facts.deploys = self.deploys();
        facts.error = self.error.map(str::to_string);
        facts
    }

    fn jobs(&self) -> Vec<MailJob> {
        self.report
            .jobs
            .iter()
            .map(|r| {
                let failed = matches!(r.outcome.result, JobResult::Failed | JobResult::Errored);
                MailJob {
                    number: r.job.number.clone(),
                    label: notify::job_label(&r.job, self.masker),
                    result: r.outcome.result.as_str().to_string(),
                    seconds: r.outcome.duration.as_secs_f64(),
                    tail: failed.then(|| self.masker.mask_all(&notify::log_tail(&r.log, 40))),
                    substituted: r.outcome.substituted.clone(),
                }
            })
            .collect()
    }

    /// What each deploy of each job did.
    fn deploys(&self) -> Vec<String> {
        self.report
            .jobs
            .iter()
            .flat_map(|r| {
                deploy_lines(r, self.deployed, self.rehearsed)
                    .into_iter()
                    .map(move |line| format!("job {}: {line}", r.job.number))
            })
            .collect()
    }

    /// A rehearsal's mail: what would be sent, with its text when asked for (it is 15
    /// to 40 lines).
    fn describe(&self, facts: &MailFacts, recipients: String) -> MailFate {
        let shown = self.options.show || self.options.dir.is_some();
        MailFate::WouldSend {
            subject: notify::subject(facts),
            recipients,
            text: shown.then(|| notify::compose(facts).0),
        }
    }

    /// Sends the mail; the server's keeps it for a retry when the server is down.
    fn deliver(
        self,
        cfg: &SmtpConfig,
        message: &lettre::Message,
        subject: String,
        recipients: String,
        say: &mut dyn FnMut(&str),
    ) -> MailFate {
        let (repo, number) = (&self.event.repo, self.number);
        let sent = notify::send(cfg, message, 3, &mut |line: String| say(&line));
        match (sent, self.outbox) {
            (Ok(()), _) => {
                tracing::info!(repo = %repo, number, to = recipients.split(", ").count(), "mail sent");
                MailFate::Sent {
                    subject,
                    recipients,
                }
            }
            (Err(e), Some((store, build_id))) => {
                let mail = notify::outbox_mail(build_id, message, 1);
                let queued = store.queue_mail(&mail, &e.to_string(), notify::retry_at(1));
                tracing::warn!(repo = %repo, number, error = %e, "mail not sent yet; kept for a retry");
                match queued {
                    Ok(()) => MailFate::Kept(e.to_string()),
                    Err(q) => {
                        MailFate::Failed(format!("not sent: {e}; could not keep it for later: {q}"))
                    }
                }
            }
            (Err(e), None) => MailFate::Failed(format!("not sent: {e}; the build result stands")),
        }
    }
}
