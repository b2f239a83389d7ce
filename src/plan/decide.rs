//! Does the build run at all, and why not (docs/semantics.md §3): `[skip ci]`,
//! `branches:`, the gh-pages rule, the root `if:`.

use super::*;

/// Does the build run at all: `[skip ci]`, `branches:`, the gh-pages rule, root `if:`.
pub fn decide_build(
    config: &Config,
    event: &BuildEvent,
    global_env: &[EnvVar],
    settings: &Settings,
) -> Decision {
    let no = |reason: String| Decision {
        runs: false,
        reason,
    };
    if matches!(event.event, EventType::Push | EventType::PullRequest)
        && let Some(word) = skip_ci(&event.commit_message)
    {
        return no(format!("the commit message contains {word}"));
    }
    let name = event.travis_branch();
    let what = if event.tag.is_some() { "tag" } else { "branch" };
    let branches = config.branches();
    if let Some(views::Branches { only, except }) = &branches
        && !name.is_empty()
    {
        if !only.is_empty() && !only.iter().any(|p| branch_matches(p, name)) {
            return no(format!(
                "{what} \"{name}\" is not in branches.only ({})",
                only.join(", ")
            ));
        }
        if let Some(p) = except.iter().find(|p| branch_matches(p, name)) {
            return no(format!(
                "{what} \"{name}\" is excluded by branches.except ({p})"
            ));
        }
        if is_gh_pages(name) && !only.iter().any(|p| is_gh_pages(p.trim_matches('/'))) {
            return no(format!(
                "gh-pages branches are not built unless branches.only lists them (\"{name}\")"
            ));
        }
    } else if is_gh_pages(name) {
        return no(format!(
            "gh-pages branches are not built unless branches.only lists them (\"{name}\")"
        ));
    }
    if let Some(cond) = config.condition() {
        let f = facts(config, &config.root, event, global_env, settings);
        return match condition::check(cond, &f) {
            Ok(true) => Decision {
                runs: true,
                reason: format!("the root if: \"{}\" is true", condition::excerpt(cond, 0)),
            },
            Ok(false) => no(format!(
                "the root if: \"{}\" is false",
                condition::excerpt(cond, 0)
            )),
            Err(e) => no(format!(
                "the root if: \"{}\" is invalid ({e}), so it counts as false",
                condition::excerpt(cond, 0)
            )),
        };
    }
    let reason = if branches.is_some() {
        format!("{what} \"{name}\" is allowed by branches")
    } else if name.is_empty() {
        "no branch filter applies".to_string()
    } else {
        format!("{what} \"{name}\" is built (no branch filter)")
    };
    Decision { runs: true, reason }
}

/// `[skip ci]`, `[ci skip]` and the other keywords, case-insensitive.
pub fn skip_ci(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    for kw in ["ci", "travis", "travis ci", "travis-ci", "travisci"] {
        for form in [format!("[skip {kw}]"), format!("[{kw} skip]")] {
            if lower.contains(&form) {
                return Some(form);
            }
        }
    }
    None
}

/// A `branches:` entry: `/regex/` (unanchored Ruby) or an exact name.
pub fn branch_matches(pattern: &str, name: &str) -> bool {
    match pattern
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| !p.is_empty())
    {
        Some(re) => condition::ruby_regex(re)
            .map(|r| r.is_match(name).unwrap_or(false))
            .unwrap_or(false),
        None => pattern == name,
    }
}

pub(super) fn is_gh_pages(name: &str) -> bool {
    let l = name.to_lowercase();
    l.contains("gh-pages") || l.contains("gh_pages")
}
