//! The build's jobs (docs/semantics.md §4), following travis-yml's `Matrix#jobs`
//! step by step: expand, include, default, shared, global, env, exclude, uniq, filter.

use super::*;

/// A job while the matrix is built: its own keys, in order.
pub(super) type Job = Vec<Entry>;

pub(super) fn job_get<'a>(job: &'a Job, key: &str) -> Option<&'a Node> {
    job.iter().find(|e| e.key == key).map(|e| &e.value)
}

pub(super) fn job_set(job: &mut Job, key: &str, value: Node) {
    match job.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value,
        None => job.push(Entry {
            key: key.to_string(),
            key_pos: value.pos,
            value,
        }),
    }
}

/// The root expansion keys in travis-yml's order, `env` last.
pub(super) fn expand_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = schema::expand_keys()
        .into_iter()
        .filter(|k| *k != "jobs")
        .collect();
    keys.push("env");
    keys
}

/// The matrix's axes: each root expansion key present, with its values.
pub(super) type Axes<'a> = Vec<(&'a str, Vec<Node>)>;

/// The build's jobs, in Travis's order of steps (docs/semantics.md §4): expand, include,
/// the default job, shared keys, env, exclude, uniq, `if:`.
pub(super) fn matrix(
    config: &Config,
    event: &BuildEvent,
    settings: &Settings,
    global_env: &[EnvVar],
    notes: &mut Vec<String>,
) -> Result<Vec<Job>, PlanError> {
    let keys = expand_keys();
    let axes = axes_of(config, &keys);
    let too_many = |n: usize, included: usize| too_many(&axes, config, n, included);
    // 1. expand: the cartesian product of every expansion key present.
    let size = axes
        .iter()
        .fold(1usize, |n, (_, v)| n.saturating_mul(v.len()));
    if size > MAX_EXPANSION {
        return Err(too_many(size, 0));
    }
    let mut jobs = expand(&axes);
    // 2. include (the single implicit job is dropped when includes exist).
    let includes = config.includes();
    let single = jobs.len() == 1 && axes.iter().all(|(_, v)| v.len() == 1);
    let expanded = if single && !includes.is_empty() {
        0
    } else {
        jobs.len()
    };
    if expanded + includes.len() > MAX_EXPANSION {
        return Err(too_many(expanded + includes.len(), includes.len()));
    }
    let included = included(includes);
    if single && !included.is_empty() {
        jobs.clear();
    }
    let n_expanded = jobs.len();
    let n_included = included.len();
    jobs.extend(included);
    // 3. default job.
    if jobs.is_empty() {
        jobs.push(Vec::new());
    }
    // 4. shared root keys; 5. first values; 6. the first env.
    merge_root(config, &keys, &axes, &mut jobs, n_expanded);
    let facts_for = |job: &Job| {
        let node = model::map_node(Pos::default(), job.clone());
        let env = job_env(global_env, job);
        facts(config, &node, event, &env, settings)
    };
    // 7. exclude.
    let excludes = config.excludes();
    jobs.retain(|job| {
        !excludes.iter().any(|rule| {
            rule_applies(rule, &facts_for(job), "jobs.exclude", notes)
                && rule_matches(rule, job, global_env)
        })
    });
    // 8. uniq; 9. filter by `if:`.
    let mut unique = uniq(jobs);
    unique.retain(|job| job_if_holds(job, &facts_for(job), notes));
    if unique.len() > MAX_JOBS {
        return Err(too_many(unique.len(), n_included));
    }
    Ok(unique)
}

/// Each root expansion key present, with its values (a scalar is one value).
pub(super) fn axes_of<'a>(config: &Config, keys: &[&'a str]) -> Axes<'a> {
    keys.iter()
        .filter_map(|k| {
            let v = config.expansion(k)?;
            let items = match &v.value {
                Value::Seq(items) => items.clone(),
                _ => vec![v.clone()],
            };
            (!items.is_empty()).then_some((*k, items))
        })
        .collect()
}

/// The error for a build of `n` jobs: it points at the first key with several values
/// (or at `jobs.include` when that is what multiplied) and says what multiplied.
pub(super) fn too_many(axes: &Axes<'_>, config: &Config, n: usize, included: usize) -> PlanError {
    let (pos, mut sizes) = axes
        .iter()
        .fold((None, Vec::new()), |(pos, mut sizes), (k, v)| {
            sizes.push(format!("{k} {}", v.len()));
            (pos.or_else(|| (v.len() > 1).then(|| v[0].pos)), sizes)
        });
    if included > 0 {
        sizes.push(format!("jobs.include {included}"));
    }
    let pos = pos
        .or(config.include_pos().filter(|_| included > 0))
        .unwrap_or(Pos { line: 1, col: 1 });
    PlanError {
        line: pos.line,
        col: pos.col,
        message: format!(
            "the build has {n} jobs ({}); Travis limits a build to {MAX_JOBS} jobs",
            sizes
                .join(" × ")
                .replace(" × jobs.include", " + jobs.include")
        ),
    }
}

/// The cartesian product of the axes: one job per combination (`env` values as a
/// one-item list, as a job's env is written).
pub(super) fn expand(axes: &Axes<'_>) -> Vec<Job> {
    if axes.is_empty() {
        return Vec::new();
    }
    let mut rows: Vec<Job> = vec![Vec::new()];
    for (key, values) in axes {
        rows = rows
            .into_iter()
            .flat_map(|row| {
                values.iter().map(move |v| {
                    let mut r = row.clone();
                    let value = if *key == "env" {
                        Node::new(v.pos, Value::Seq(vec![v.clone()]))
                    } else {
                        v.clone()
                    };
                    job_set(&mut r, key, value);
                    r
                })
            })
            .collect();
    }
    rows
}

/// The `jobs.include` entries as jobs; one without a `stage` takes the one before's.
pub(super) fn included(includes: &[Node]) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    let mut stage: Option<Node> = None;
    for inc in includes {
        let Some(entries) = inc.as_map() else {
            continue;
        };
        let mut job: Job = entries.to_vec();
        match job_get(&job, "stage") {
            Some(s) => stage = Some(s.clone()),
            None => {
                if let Some(s) = &stage {
                    job_set(&mut job, "stage", s.clone());
                }
            }
        }
        out.push(job);
    }
    out
}

/// Each job gets the root's shared keys (its own win); an included job (from index
/// `n_expanded`) the first value of each expansion key it lacks; a job without env the
/// first `env.jobs` entry.
pub(super) fn merge_root(
    config: &Config,
    keys: &[&str],
    axes: &Axes<'_>,
    jobs: &mut [Job],
    n_expanded: usize,
) {
    let root = config.root.as_map().unwrap_or_default();
    let shared: Vec<&Entry> = root
        .iter()
        .filter(|e| !keys.contains(&e.key.as_str()) && !NOT_SHARED.contains(&e.key.as_str()))
        .collect();
    let first_env = config
        .matrix_env()
        .and_then(|j| j.as_seq())
        .and_then(|s| s.first())
        .cloned();
    for (i, job) in jobs.iter_mut().enumerate() {
        let mut merged: Job = shared.iter().map(|e| (*e).clone()).collect();
        for e in job.drain(..) {
            job_set(&mut merged, &e.key, e.value);
        }
        if i >= n_expanded {
            for (key, values) in axes {
                if *key != "env" && job_get(&merged, key).is_none() {
                    job_set(&mut merged, key, values[0].clone());
                }
            }
        }
        if job_get(&merged, "env").is_none()
            && let Some(first) = &first_env
        {
            job_set(
                &mut merged,
                "env",
                Node::new(first.pos, Value::Seq(vec![first.clone()])),
            );
        }
        *job = merged;
    }
}

/// The jobs without repeats (by a canonical text of each, so linear in their number).
pub(super) fn uniq(jobs: Vec<Job>) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    jobs.into_iter()
        .filter(|job| seen.insert(fingerprint_entries(job)))
        .collect()
}

/// Whether a job's own `if:` holds (a job without one always runs); a false one is
/// noted.
pub(super) fn job_if_holds(job: &Job, f: &Facts, notes: &mut Vec<String>) -> bool {
    let Some(cond) = str_of(job_get(job, "if")) else {
        return true;
    };
    let keep = condition::check(cond, f).unwrap_or(false);
    if !keep {
        let name = str_of(job_get(job, "name")).unwrap_or("a job");
        notes.push(format!(
            "skipping {name}: its if: \"{}\" is false",
            condition::excerpt(cond, 0)
        ));
    }
    keep
}

/// A text that two jobs share exactly when they are [`Node::same`]: maps with their
/// keys sorted, positions and quoting left out.
pub(super) fn fingerprint_entries(entries: &[Entry]) -> String {
    let mut out = String::new();
    fingerprint_map(entries, &mut out);
    out
}

pub(super) fn fingerprint_map(entries: &[Entry], out: &mut String) {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    out.push('{');
    for e in sorted {
        out.push_str(&format!("{}:{}", e.key.len(), e.key));
        fingerprint(&e.value, out);
    }
    out.push('}');
}

pub(super) fn fingerprint(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push('~'),
        Value::Scalar(s) => out.push_str(&format!("s{}:{}", s.text.len(), s.text)),
        Value::Seq(items) => {
            out.push('[');
            items.iter().for_each(|i| fingerprint(i, out));
            out.push(']');
        }
        Value::Map(entries) => fingerprint_map(entries, out),
    }
}

/// The job's env vars: globals first, then its own, duplicates dropped.
pub(super) fn job_env(global: &[EnvVar], job: &Job) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = global.to_vec();
    for v in model::env_list(job_get(job, "env")) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A rule's `if:` (exclude, allow_failures): a false one means the rule is ignored.
pub(super) fn rule_applies(rule: &Node, f: &Facts, what: &str, notes: &mut Vec<String>) -> bool {
    match views::condition_of(rule) {
        None => true,
        Some(cond) => {
            let ok = condition::check(cond, f).unwrap_or(false);
            if !ok {
                notes.push(format!(
                    "ignoring a {what} rule: its if: \"{}\" is false",
                    condition::excerpt(cond, 0)
                ));
            }
            ok
        }
    }
}

/// Exact-match rules of `jobs.exclude` and `jobs.allow_failures` (§4.6, §4.9).
pub(super) fn rule_matches(rule: &Node, job: &Job, global_env: &[EnvVar]) -> bool {
    let Some(entries) = rule.as_map() else {
        return false;
    };
    let mut any = false;
    for e in entries {
        match e.key.as_str() {
            "if" | "branch" => continue,
            "env" => {
                let mine: Vec<EnvVar> = model::env_list(job_get(job, "env"))
                    .into_iter()
                    .filter(|v| !global_env.contains(v))
                    .collect();
                if mine != model::env_list(Some(&e.value)) {
                    return false;
                }
            }
            "stage" => {
                let want = str_of(Some(&e.value)).unwrap_or_default();
                match str_of(job_get(job, "stage")) {
                    Some(s) if s.eq_ignore_ascii_case(want) => {}
                    None if want.eq_ignore_ascii_case("test") => {}
                    _ => return false,
                }
            }
            key => {
                let Some(mine) = job_get(job, key) else {
                    return false;
                };
                if !wrap_same(mine, &e.value) {
                    return false;
                }
            }
        }
        any = true;
    }
    any
}

/// Compares as travis-yml does: a scalar equals a one-item list of it.
pub(super) fn wrap_same(a: &Node, b: &Node) -> bool {
    let wrap = |n: &Node| match &n.value {
        Value::Seq(items) => items.clone(),
        _ => vec![n.clone()],
    };
    let (a, b) = (wrap(a), wrap(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.same(y))
}
