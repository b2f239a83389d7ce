//! Which deploys fire for a job, and why (docs/semantics.md §6).

use super::*;

/// Whether a deploy fires for this job, with Travis's skip reason when it does not.
pub fn deploy_plan(deploy: &Node, event: &BuildEvent, job: &Job) -> DeployPlan {
    let provider = DeployKeys(deploy).provider().unwrap_or("?").to_string();
    let (fires, reason) = deploy_fires(deploy, event, job);
    DeployPlan {
        provider,
        fires,
        reason,
        config: deploy.clone(),
    }
}

pub(super) fn deploy_fires(deploy: &Node, event: &BuildEvent, job: &Job) -> (bool, String) {
    if event.event == EventType::PullRequest {
        return (false, "the current build is a pull request".into());
    }
    let on = DeployKeys(deploy).on();
    let tags = on.tags();
    let all_branches = on.all_branches();
    let branch = event.travis_branch();
    match tags {
        Some(true) if event.tag.is_none() => {
            return (false, "this is not a tagged commit".into());
        }
        Some(false) if event.tag.is_some() => {
            return (false, "this is a tagged commit".into());
        }
        _ => {}
    }
    let mut why = Vec::new();
    if !all_branches && tags != Some(true) {
        let mut allowed = on.branches();
        if allowed.is_empty() {
            allowed.push("master".into());
        }
        if !allowed.iter().any(|b| b == branch) {
            return (false, format!("this branch is not permitted: {branch}"));
        }
        why.push(format!("branch {branch} is permitted"));
    } else if tags == Some(true) {
        why.push(format!("tag {branch}"));
    } else {
        why.push("all branches".into());
    }
    if let Some(repo) = on.repo()
        && repo != event.repo
    {
        return (
            false,
            format!(
                "this repo's name does not match one specified in .travis.yml's deploy.on.repo: {repo}"
            ),
        );
    }
    for (key, job_key) in RUNTIME_KEYS {
        let Some(want) = on.runtime(key) else {
            continue;
        };
        let have = job_get(job, job_key).and_then(views::first_value);
        if have != Some(want.as_str()) {
            return (false, "this is not on the required runtime".into());
        }
    }
    let conditions = on.conditions();
    if !conditions.is_empty() {
        why.push(format!(
            "if [[ {} ]] holds when the job runs",
            conditions.join(" ]] && [[ ")
        ));
    }
    (true, format!("after a passing script: {}", why.join("; ")))
}
