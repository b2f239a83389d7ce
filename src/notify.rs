//! Email (docs/semantics.md §7): whether a build mails, the subject and the message
//! (plain text and HTML, UTF-8), and sending it over SMTP with lettre.
//!
//! The decisions ([`status`], [`should_send`], [`compose`]) are pure; [`send`] does I/O.

use std::str::FromStr;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::build::BuildState;
use crate::plan::{EmailPolicy, Frequency};
use crate::store::Status;

/// Errors composing or sending mail.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `RUNWAY_SMTP_URL` / `RUNWAY_SMTP_FROM` are missing or malformed.
    #[error("smtp: {0}")]
    Config(String),
    /// The SMTP server could not be reached or refused the message.
    #[error("smtp: {0}")]
    Send(String),
}

/// Travis's subject status: Passed, Fixed, Broken, Still Failing, Failed, Errored, Canceled.
pub fn status(state: BuildState, previous: Option<Status>) -> &'static str {
    let prev_passed = previous == Some(Status::Passed);
    match state {
        BuildState::Errored => "Errored",
        BuildState::Canceled => "Canceled",
        BuildState::Passed if previous.is_some() && !prev_passed => "Fixed",
        BuildState::Passed => "Passed",
        BuildState::Failed if prev_passed => "Broken",
        BuildState::Failed if previous.is_some() => "Still Failing",
        BuildState::Failed => "Failed",
    }
}

/// §7: on_success / on_failure with always, never, change; errored and canceled count
/// as failures; change compares with the previous finished build of the branch.
pub fn should_send(policy: &EmailPolicy, state: BuildState, previous: Option<Status>) -> bool {
    if !policy.enabled || policy.recipients.is_empty() {
        return false;
    }
    let passed = state == BuildState::Passed;
    let freq = if passed {
        policy.on_success
    } else {
        policy.on_failure
    };
    match freq {
        Frequency::Always => true,
        Frequency::Never => false,
        Frequency::Change => match previous {
            None => true,
            Some(p) => (p == Status::Passed) != passed,
        },
    }
}

/// One job's line in the mail.
#[derive(Clone, Debug)]
pub struct MailJob {
    /// `N.i`
    pub number: String,
    /// What defines the job (`jdk: openjdk8, A=1`).
    pub label: String,
    /// passed, failed, …
    pub result: String,
    /// Seconds.
    pub seconds: f64,
    /// The last lines of its log, for failed jobs (already masked).
    pub tail: Option<String>,
    /// What the machine's own runtimes stood in for (`--substitutes`), said beside it.
    pub substituted: Vec<String>,
}

impl MailJob {
    /// The job's label, with its substitutes when it ran on any.
    fn shown_label(&self) -> String {
        if self.substituted.is_empty() {
            self.label.clone()
        } else {
            format!(
                "{} (on substitutes: {})",
                self.label,
                self.substituted.join(", ")
            )
        }
    }
}

/// What defines a job in a mail: its matrix values and env (secrets masked).
pub fn job_label(job: &crate::plan::JobPlan, masker: &crate::mask::Masker) -> String {
    let mut label: Vec<String> = job
        .matrix
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    label.extend(
        job.env
            .iter()
            .map(|v| masker.mask_all(&format!("{}={}", v.name, v.value))),
    );
    label.join(", ")
}

/// Everything a build mail says.
#[derive(Clone, Debug)]
pub struct MailFacts {
    /// `owner/repo`
    pub repo: String,
    /// Build number.
    pub number: u64,
    /// Branch or tag.
    pub branch: String,
    /// Full sha.
    pub commit: String,
    /// Commit author (`Name <email>`).
    pub author: String,
    /// Commit message.
    pub message: String,
    /// The build state.
    pub state: BuildState,
    /// The previous finished build's state on the branch.
    pub previous: Option<Status>,
    /// Cron builds get `[CRON] `.
    pub cron: bool,
    /// Seconds.
    pub seconds: f64,
    /// The jobs.
    pub jobs: Vec<MailJob>,
    /// What each deploy did.
    pub deploys: Vec<String>,
    /// A link to the build page, when a server URL is configured.
    pub url: Option<String>,
    /// Why the build errored before any job ran (an invalid `.travis.yml`).
    pub error: Option<String>,
}

impl MailFacts {
    /// The facts every mail of build `number` of `event` states, in `state`; its jobs,
    /// deploys, duration and error are the caller's to add.
    pub fn about(
        event: &crate::event::BuildEvent,
        number: u64,
        (state, previous): (BuildState, Option<Status>),
        masker: &crate::mask::Masker,
        public_url: Option<&str>,
    ) -> MailFacts {
        MailFacts {
            repo: event.repo.clone(),
            number,
            branch: event.travis_branch().to_string(),
            commit: event.commit.clone(),
            author: event
                .author
                .as_ref()
                .map_or_else(|| "unknown".into(), |p| format!("{} <{}>", p.name, p.email)),
            message: masker.mask_all(&event.commit_message),
            state,
            previous,
            cron: event.event == crate::event::EventType::Cron,
            seconds: 0.0,
            jobs: Vec::new(),
            deploys: Vec::new(),
            url: public_url.map(|u| build_url(u, &event.repo, number)),
            error: None,
        }
    }
}

/// The outbox's copy of `message` for build `build_id`, tried `attempts` times.
pub fn outbox_mail(build_id: i64, message: &Message, attempts: u32) -> crate::store::OutboxMail {
    let envelope = message.envelope();
    crate::store::OutboxMail {
        id: 0,
        build_id,
        sender: envelope.from().map(ToString::to_string).unwrap_or_default(),
        recipients: envelope.to().iter().map(ToString::to_string).collect(),
        message: message.formatted(),
        attempts,
    }
}

fn sha7(sha: &str) -> &str {
    if sha.is_empty() {
        "local"
    } else {
        &sha[..sha.len().min(7)]
    }
}

/// `[runway] Passed: owner/repo#N (branch - sha7)`.
pub fn subject(f: &MailFacts) -> String {
    format!(
        "[runway] {}{}{}: {}#{} ({} - {})",
        if f.cron { "[CRON] " } else { "" },
        status(f.state, f.previous),
        if f.jobs.iter().any(|j| !j.substituted.is_empty()) {
            " on substitutes"
        } else {
            ""
        },
        f.repo,
        f.number,
        f.branch,
        sha7(&f.commit)
    )
}

fn duration(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{} min {} sec", s / 60, s % 60)
    } else {
        format!("{s} sec")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plain-text and HTML bodies.
pub fn compose(f: &MailFacts) -> (String, String) {
    let st = status(f.state, f.previous);
    let mut t = String::new();
    t.push_str(&format!(
        "Build #{} {} ({})\n\n",
        f.number,
        st,
        f.state.as_str()
    ));
    t.push_str(&format!(
        "Repository: {}\nBranch:     {}\nDuration:   {}\n",
        f.repo,
        f.branch,
        duration(f.seconds)
    ));
    // A rehearsal of files on disk has no commit, and perhaps no author: say so
    // rather than "local by unknown".
    let commit = if f.commit.is_empty() {
        "the files on disk (no commit)".to_string()
    } else {
        sha7(&f.commit).to_string()
    };
    let by = if f.author.is_empty() || f.author == "unknown" {
        String::new()
    } else {
        format!(" by {}", f.author)
    };
    t.push_str(&format!("Commit:     {commit}{by}\n\n"));
    for line in f.message.trim_end().lines() {
        t.push_str(&format!("    {line}\n"));
    }
    if let Some(e) = &f.error {
        t.push_str(&format!("\nThe build errored before any job ran:\n  {e}\n"));
    }
    t.push_str("\nJobs:\n");
    for j in &f.jobs {
        t.push_str(&format!(
            "  #{:<6} {:<9} {:>8}  {}\n",
            j.number,
            j.result,
            duration(j.seconds),
            j.shown_label()
        ));
    }
    if !f.deploys.is_empty() {
        t.push_str("\nDeploys:\n");
        for d in &f.deploys {
            t.push_str(&format!("  {d}\n"));
        }
    }
    for j in f.jobs.iter().filter(|j| j.tail.is_some()) {
        t.push_str(&format!(
            "\nJob #{} {} — the last lines of its log:\n\n",
            j.number, j.result
        ));
        for line in j.tail.as_deref().unwrap_or("").lines() {
            t.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(u) = &f.url {
        t.push_str(&format!("\nThe build: {u}\n"));
    }

    let colour = if f.state == BuildState::Passed {
        "#2e7d32"
    } else {
        "#c62828"
    };
    let mut h = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"></head><body style=\"font-family:sans-serif\">",
    );
    h.push_str(&format!(
        "<h2 style=\"color:{colour}\">Build #{} {}</h2><p>{} &middot; {} &middot; {}</p>",
        f.number,
        escape(st),
        escape(&f.repo),
        escape(&f.branch),
        duration(f.seconds)
    ));
    h.push_str(&format!(
        "<p><code>{}</code>{}</p><pre>{}</pre>",
        escape(&commit),
        escape(&by),
        escape(f.message.trim_end())
    ));
    if let Some(e) = &f.error {
        h.push_str(&format!(
            "<p>The build errored before any job ran:</p><pre>{}</pre>",
            escape(e)
        ));
    }
    h.push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>Job</th><th>Result</th><th>Duration</th><th>Env</th></tr>");
    for j in &f.jobs {
        h.push_str(&format!(
            "<tr><td>#{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&j.number),
            escape(&j.result),
            duration(j.seconds),
            escape(&j.shown_label())
        ));
    }
    h.push_str("</table>");
    if !f.deploys.is_empty() {
        h.push_str("<h3>Deploys</h3><ul>");
        for d in &f.deploys {
            h.push_str(&format!("<li>{}</li>", escape(d)));
        }
        h.push_str("</ul>");
    }
    for j in f.jobs.iter().filter(|j| j.tail.is_some()) {
        h.push_str(&format!(
            "<h3>Job #{} {}</h3><pre style=\"background:#f5f5f5;padding:8px\">{}</pre>",
            escape(&j.number),
            escape(&j.result),
            escape(j.tail.as_deref().unwrap_or(""))
        ));
    }
    if let Some(u) = &f.url {
        h.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", escape(u)));
    }
    h.push_str("</body></html>");
    (t, h)
}

/// The last `n` lines of a job log, without fold/time markers.
pub fn log_tail(log: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.starts_with("travis_fold:") && !l.starts_with("travis_time:"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Recipients that are addresses, and the ones that are not (to warn about).
pub fn split_recipients(list: &[String]) -> (Vec<Mailbox>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for r in list {
        match Mailbox::from_str(r.trim()) {
            Ok(m) if !r.trim().is_empty() => ok.push(m),
            _ => bad.push(r.clone()),
        }
    }
    (ok, bad)
}

/// Builds the message.
pub fn message(from: &Mailbox, to: &[Mailbox], f: &MailFacts) -> Result<Message, NotifyError> {
    let (text, html) = compose(f);
    let mut b = Message::builder().from(from.clone()).subject(subject(f));
    for m in to {
        b = b.to(m.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| NotifyError::Config(e.to_string()))
}

/// Where mail goes: `RUNWAY_SMTP_URL` (`smtp://user:pass@host:port`, `smtps://…`,
/// `?tls=required`, `&insecure=true` for self-signed test servers) and `RUNWAY_SMTP_FROM`.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// The URL.
    pub url: String,
    /// The sender.
    pub from: Mailbox,
}

impl SmtpConfig {
    /// From `RUNWAY_SMTP_URL` and `RUNWAY_SMTP_FROM` (default `runway <runway@localhost>`).
    pub fn from_env() -> Result<SmtpConfig, NotifyError> {
        let url = std::env::var("RUNWAY_SMTP_URL")
            .map_err(|_| NotifyError::Config("RUNWAY_SMTP_URL is not set (e.g. smtp://user:pass@mail.example.com:587?tls=required)".into()))?;
        let from = std::env::var("RUNWAY_SMTP_FROM")
            .unwrap_or_else(|_| "runway <runway@localhost>".into());
        let from = Mailbox::from_str(&from)
            .map_err(|e| NotifyError::Config(format!("RUNWAY_SMTP_FROM \"{from}\": {e}")))?;
        Ok(SmtpConfig { url, from })
    }

    fn transport(&self) -> Result<SmtpTransport, NotifyError> {
        let url = url_parts(&self.url)?;
        let tls = if url.insecure {
            TlsParameters::builder(url.host.clone())
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true)
                .build()
        } else {
            TlsParameters::new(url.host.clone())
        }
        .map_err(|e| NotifyError::Config(e.to_string()))?;
        let mut b = SmtpTransport::builder_dangerous(&url.host)
            .port(url.port)
            .timeout(Some(Duration::from_secs(20)));
        b = match url.tls.as_str() {
            "wrapper" => b.tls(Tls::Wrapper(tls)),
            "required" => b.tls(Tls::Required(tls)),
            "none" => b.tls(Tls::None),
            _ => b.tls(Tls::Opportunistic(tls)),
        };
        if let Some((u, p)) = url.credentials {
            // PLAIN first; LOGIN only for servers that do not offer PLAIN.
            b = b
                .credentials(Credentials::new(u, p))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(b.build())
    }
}

struct UrlParts {
    host: String,
    port: u16,
    tls: String,
    insecure: bool,
    credentials: Option<(String, String)>,
}

fn url_parts(s: &str) -> Result<UrlParts, NotifyError> {
    let bad = || {
        NotifyError::Config("RUNWAY_SMTP_URL must look like smtp://user:pass@host:port".to_string())
    };
    let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let hostport = hostport.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
        None => (
            hostport.to_string(),
            if scheme == "smtps" { 465 } else { 25 },
        ),
    };
    let decode = |x: &str| crate::mask::percent_decode(x, false);
    let credentials = auth.map(|a| {
        let (u, p) = a.split_once(':').unwrap_or((a, ""));
        (decode(u), decode(p))
    });
    let mut tls = if scheme == "smtps" {
        "wrapper".to_string()
    } else {
        "opportunistic".to_string()
    };
    let mut insecure = false;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=').unwrap_or((kv, "")) {
            ("tls", v) => tls = v.to_string(),
            ("insecure", v) => insecure = v == "true" || v == "1",
            _ => {}
        }
    }
    Ok(UrlParts {
        host,
        port,
        tls,
        insecure,
        credentials,
    })
}

/// Sends, retrying transient failures with backoff (`attempts` tries, 1 s, 2 s, 4 s…
/// apart); a permanent refusal is not retried. `say` gets a line per failed try.
pub fn send(
    cfg: &SmtpConfig,
    msg: &Message,
    attempts: u32,
    say: &mut dyn FnMut(String),
) -> Result<(), NotifyError> {
    let transport = cfg.transport()?;
    let mut delay = Duration::from_secs(1);
    let mut last = String::new();
    for i in 1..=attempts.max(1) {
        match transport.send(msg) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = crate::error_chain(&e);
                say(format!(
                    "mail: sending failed (try {i} of {attempts}): {last}"
                ));
                // A refusal (bad credentials, unknown recipient) will not change on retry.
                if e.is_permanent() {
                    break;
                }
                if i < attempts {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }
    Err(NotifyError::Send(last))
}

/// When the outbox tries a mail again after `attempts` tries: `RUNWAY_MAIL_RETRY_SECS`
/// (default 60) doubled per try, at most an hour. Milliseconds since the epoch.
pub fn retry_at(attempts: u32) -> i64 {
    let base: f64 = std::env::var("RUNWAY_MAIL_RETRY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60.0);
    let delay = (base * 2f64.powi(attempts.saturating_sub(1).min(16) as i32)).min(3600.0);
    now_ms() + (delay * 1000.0) as i64
}

/// `text` percent-encoded for a URL query value (all but RFC 3986's unreserved).
pub fn url_component(text: &str) -> String {
    crate::mask::percent_encode(text, false, false, false)
}

/// The build page of `repo`'s build `number` on the server at `base` (its
/// `public_url`), naming the repository: several repositories have a build #1.
pub fn build_url(base: &str, repo: &str, number: u64) -> String {
    let repo = crate::mask::percent_encode(repo, true, false, false);
    format!("{}/builds/{number}?repo={repo}", base.trim_end_matches('/'))
}

use crate::clock::now_ms;

/// One try at sending an already formatted message (the server's outbox retries).
pub fn send_raw(
    cfg: &SmtpConfig,
    sender: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<(), NotifyError> {
    let from = lettre::Address::from_str(sender).map_err(|e| NotifyError::Config(e.to_string()))?;
    let to: Vec<lettre::Address> = recipients
        .iter()
        .filter_map(|r| lettre::Address::from_str(r).ok())
        .collect();
    let envelope = lettre::address::Envelope::new(Some(from), to)
        .map_err(|e| NotifyError::Config(e.to_string()))?;
    cfg.transport()?
        .send_raw(&envelope, message)
        .map(|_| ())
        .map_err(|e| NotifyError::Send(crate::error_chain(&e)))
}

#[cfg(test)]
mod tests {
    /// issue 14: a rehearsal of files on disk said "Commit: local by unknown".
    #[test]
    fn a_mail_without_a_commit_says_so() {
        let facts = MailFacts {
            repo: "local/app".into(),
            number: 1,
            branch: "master".into(),
            commit: String::new(),
            author: "unknown".into(),
            message: String::new(),
            state: BuildState::Passed,
            previous: None,
            cron: false,
            seconds: 1.0,
            jobs: Vec::new(),
            deploys: Vec::new(),
            url: None,
            error: None,
        };
        let (text, html) = compose(&facts);
        assert!(
            text.contains("Commit:     the files on disk (no commit)\n"),
            "{text}"
        );
        assert!(
            !text.contains("unknown") && !html.contains("unknown"),
            "{text}"
        );
    }

    use super::*;

    fn policy(s: Frequency, f: Frequency) -> EmailPolicy {
        EmailPolicy {
            enabled: true,
            recipients: vec!["a@x.org".into()],
            on_success: s,
            on_failure: f,
            reason: String::new(),
        }
    }

    #[test]
    fn s7_statuses() {
        assert_eq!(status(BuildState::Passed, None), "Passed");
        assert_eq!(status(BuildState::Passed, Some(Status::Passed)), "Passed");
        assert_eq!(status(BuildState::Passed, Some(Status::Failed)), "Fixed");
        assert_eq!(status(BuildState::Passed, Some(Status::Errored)), "Fixed");
        assert_eq!(status(BuildState::Failed, Some(Status::Passed)), "Broken");
        assert_eq!(
            status(BuildState::Failed, Some(Status::Failed)),
            "Still Failing"
        );
        assert_eq!(status(BuildState::Failed, None), "Failed");
        assert_eq!(status(BuildState::Errored, Some(Status::Passed)), "Errored");
        assert_eq!(status(BuildState::Canceled, None), "Canceled");
    }

    #[test]
    fn s7_default_change_and_always() {
        let p = policy(Frequency::Change, Frequency::Always);
        let seq = [
            (BuildState::Passed, None, true),
            (BuildState::Failed, Some(Status::Passed), true),
            (BuildState::Failed, Some(Status::Failed), true),
            (BuildState::Passed, Some(Status::Failed), true),
            (BuildState::Passed, Some(Status::Passed), false),
        ];
        for (state, prev, want) in seq {
            assert_eq!(
                should_send(&p, state, prev),
                want,
                "{state:?} after {prev:?}"
            );
        }
        let change = policy(Frequency::Change, Frequency::Change);
        assert!(
            !should_send(&change, BuildState::Errored, Some(Status::Failed)),
            "errored counts as a failure"
        );
        assert!(should_send(
            &change,
            BuildState::Canceled,
            Some(Status::Passed)
        ));
        assert!(!should_send(
            &policy(Frequency::Never, Frequency::Never),
            BuildState::Failed,
            None
        ));
    }

    #[test]
    fn smtp_urls() {
        let u = url_parts("smtp://us%40er:p%3Ass@mail.example.com:587?tls=required").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls.as_str()),
            ("mail.example.com", 587, "required")
        );
        assert_eq!(u.credentials, Some(("us@er".into(), "p:ss".into())));
        let s = url_parts("smtps://h").unwrap();
        assert_eq!((s.port, s.tls.as_str()), (465, "wrapper"));
    }

    #[test]
    fn recipients_that_are_not_addresses_are_reported() {
        let (ok, bad) = split_recipients(&["a@x.org".into(), "본인 메일 주소".into()]);
        assert_eq!(ok.len(), 1);
        assert_eq!(bad, ["본인 메일 주소"]);
    }

    #[test]
    fn build_links_name_the_repository() {
        assert_eq!(
            build_url("https://ci.example.com/", "o/app", 3),
            "https://ci.example.com/builds/3?repo=o/app"
        );
        assert_eq!(
            build_url("http://ci", "o/a&b c", 1),
            "http://ci/builds/1?repo=o/a%26b%20c"
        );
    }
}
