//! Retention (runway.toml's `[retention]`): which ended builds, with their jobs, logs,
//! tasks and mails, are pruned. A build is kept while any rule keeps it: it is one of
//! the last `keep_builds` of its branch (or tag), it ended within `keep_days`, or it
//! failed (or errored) within `keep_failed_days`. Each repository's newest build is
//! always kept (the next build's number follows it), and queued or running builds are
//! never touched. No rule set: nothing is pruned.

use serde::Deserialize;

use super::tasks::Value;
use super::{Store, StoreError};

/// `[retention]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Keep the last this many builds of each branch (or tag).
    pub keep_builds: Option<u64>,
    /// Keep builds that ended within this many days.
    pub keep_days: Option<u64>,
    /// Keep failed and errored builds that ended within this many days.
    pub keep_failed_days: Option<u64>,
}

impl Policy {
    /// True when some rule is set.
    pub fn prunes(&self) -> bool {
        self.keep_builds.is_some() || self.keep_days.is_some() || self.keep_failed_days.is_some()
    }

    /// Whether an ended build is kept: its place among its branch's builds (1 = the
    /// newest), its state, and how many seconds ago it ended.
    pub fn keeps(&self, place: u64, failed: bool, age_secs: i64) -> bool {
        let within = |days: Option<u64>| days.is_some_and(|d| age_secs < (d * 86_400) as i64);
        self.keep_builds.is_some_and(|n| place <= n)
            || within(self.keep_days)
            || (failed && within(self.keep_failed_days))
    }
}

impl Store {
    /// Prunes what `policy` does not keep, as of `now` (Unix seconds); the builds pruned.
    pub fn prune(&self, policy: &Policy, now: i64) -> Result<usize, StoreError> {
        if !policy.prunes() {
            return Ok(0);
        }
        let ended = self.db().query(
            "SELECT id, state, finished_at, place, newest FROM (
               SELECT id, state, COALESCE(finished_at, started_at) AS finished_at,
                 ROW_NUMBER() OVER (PARTITION BY repo, COALESCE(tag, ''), COALESCE(branch, '')
                                    ORDER BY number DESC) AS place,
                 ROW_NUMBER() OVER (PARTITION BY repo ORDER BY number DESC) AS newest
               FROM builds) AS b
             WHERE state NOT IN ('queued', 'running')",
            &[],
        )?;
        let mut pruned = 0;
        for r in ended {
            let int = |i: usize| match r.get(i) {
                Some(Value::Int(v)) => *v,
                _ => 0,
            };
            let failed =
                matches!(r.get(1), Some(Value::Text(s)) if s == "failed" || s == "errored");
            let (id, place, newest) = (int(0), int(3) as u64, int(4));
            if newest == 1 || policy.keeps(place, failed, now - int(2)) {
                continue;
            }
            self.forget(id)?;
            pruned += 1;
        }
        Ok(pruned)
    }

    /// Removes build `id` with everything kept about it.
    fn forget(&self, id: i64) -> Result<(), StoreError> {
        if let Some(a) = &self.archive {
            a.remove(id)?;
        }
        self.drop_tasks(id)?;
        for sql in [
            "DELETE FROM jobs WHERE build_id = $1",
            "DELETE FROM outbox WHERE build_id = $1",
            "DELETE FROM deliveries WHERE build_id = $1",
            "DELETE FROM builds WHERE id = $1",
        ] {
            self.db().execute(sql, &[id.into()])?;
        }
        self.remove_partial_log(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_is_kept_while_any_rule_keeps_it() {
        let p = Policy {
            keep_builds: Some(2),
            keep_days: Some(7),
            keep_failed_days: Some(30),
        };
        let day = 86_400;
        assert!(p.keeps(1, false, 100 * day), "among the last 2");
        assert!(p.keeps(5, false, 3 * day), "within 7 days");
        assert!(!p.keeps(5, false, 8 * day));
        assert!(p.keeps(5, true, 20 * day), "failures longer");
        assert!(!p.keeps(5, true, 31 * day));
        assert!(!Policy::default().prunes());
    }
}
