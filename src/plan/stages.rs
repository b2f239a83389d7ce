//! Stages (docs/semantics.md §4.8): their order, each job's, the `if:` of a stage.

use super::*;

pub(super) fn order_stages(
    config: &Config,
    event: &BuildEvent,
    settings: &Settings,
    global_env: &[EnvVar],
    jobs: Vec<Job>,
    notes: &mut Vec<String>,
) -> (Vec<String>, Vec<(String, Job)>) {
    // Declared stages first, then names first seen on jobs (case-insensitive).
    let mut stages: Vec<(String, Option<String>)> = Vec::new();
    let add = |name: &str, cond: Option<String>, stages: &mut Vec<(String, Option<String>)>| {
        if !stages.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            stages.push((name.to_string(), cond));
        }
    };
    for s in config.stages() {
        add(&s.name, s.condition, &mut stages);
    }
    let stage_of = |job: &Job| str_of(job_get(job, "stage")).unwrap_or("test").to_string();
    for job in &jobs {
        add(&stage_of(job), None, &mut stages);
    }
    let root_facts = facts(config, &config.root, event, global_env, settings);
    let mut kept: Vec<String> = Vec::new();
    for (name, cond) in &stages {
        if let Some(cond) = cond
            && !condition::check(cond, &root_facts).unwrap_or(false)
        {
            notes.push(format!(
                "skipping stage {name}: its if: \"{}\" is false",
                condition::excerpt(cond, 0)
            ));
            continue;
        }
        if jobs.iter().any(|j| stage_of(j).eq_ignore_ascii_case(name)) {
            kept.push(name.clone());
        }
    }
    let mut ordered = Vec::new();
    for name in &kept {
        for job in &jobs {
            if stage_of(job).eq_ignore_ascii_case(name) {
                ordered.push((name.clone(), job.clone()));
            }
        }
    }
    (kept, ordered)
}
