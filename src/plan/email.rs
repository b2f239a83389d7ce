//! Who gets the build's mail and when (docs/semantics.md §7).

use super::*;

pub(super) fn email_policy(config: &Config, event: &BuildEvent, root_facts: &Facts) -> EmailPolicy {
    let notifications = config.notifications();
    let fallback = |given: Option<&str>, default: Frequency| {
        given.and_then(Frequency::parse).unwrap_or(default)
    };
    let mut policy = EmailPolicy {
        enabled: true,
        recipients: Vec::new(),
        on_success: fallback(notifications.on_success(), Frequency::Change),
        on_failure: fallback(notifications.on_failure(), Frequency::Always),
        reason: String::new(),
    };
    let mut configured = false;
    for entry in notifications.email() {
        let item = entry.0;
        match &item.value {
            Value::Scalar(_) if item.as_bool() == Some(false) => {
                policy.enabled = false;
                policy.reason = "email: false".into();
            }
            Value::Scalar(_) if item.as_bool() == Some(true) => {}
            Value::Scalar(s) => {
                configured = true;
                policy.recipients.extend(split_addresses(&s.text));
            }
            Value::Map(_) => {
                for text in entry.recipients() {
                    configured = true;
                    policy.recipients.extend(split_addresses(text));
                }
                if let Some(f) = entry.on_success().and_then(Frequency::parse) {
                    policy.on_success = f;
                }
                if let Some(f) = entry.on_failure().and_then(Frequency::parse) {
                    policy.on_failure = f;
                }
                if !entry.enabled() {
                    policy.enabled = false;
                    policy.reason = "email is disabled (enabled: false)".into();
                }
                if let Some(cond) = entry.condition()
                    && !condition::check(cond, root_facts).unwrap_or(false)
                {
                    policy.enabled = false;
                    policy.reason = format!(
                        "notifications.email.if \"{}\" is false",
                        condition::excerpt(cond, 0)
                    );
                }
            }
            _ => {}
        }
    }
    if !configured {
        for p in [&event.author, &event.committer].into_iter().flatten() {
            if !p.email.is_empty() && !policy.recipients.contains(&p.email) {
                policy.recipients.push(p.email.clone());
            }
        }
    }
    policy.recipients.dedup();
    if event.event == EventType::PullRequest && policy.enabled {
        policy.enabled = false;
        policy.reason = "email is never sent for pull requests".into();
    }
    if policy.enabled {
        policy.reason = if configured {
            "to the configured recipients".into()
        } else {
            "to the commit's author and committer (no recipients configured)".into()
        };
    }
    policy
}

/// `"a@x, b@y"` → two addresses.
pub(super) fn split_addresses(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
