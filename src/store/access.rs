//! Sign-in's records, in the store every serve node shares: the key sessions are
//! signed with, sign-ins under way (each taken once: a replayed callback finds
//! nothing), sessions, people's personal API tokens and the audit trail. Sessions and
//! tokens are kept as digests only; a revoked token or ended session is refused by the
//! next request on any node, since each request reads the store.

use super::tasks::Value;
use super::{Store, StoreError};

/// The setting holding the key session cookies are signed with.
const SESSION_KEY: &str = "session_key";
/// Seconds a sign-in may take between `/auth/login` and the callback.
pub const LOGIN_SECS: i64 = 600;
/// The most sign-ins under way at once (what `/auth/login` asked by anyone may keep).
pub const MAX_LOGINS: i64 = 10_000;

/// A sign-in under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The nonce its ID token must carry.
    pub nonce: String,
    /// Its PKCE verifier.
    pub verifier: String,
    /// Where to go afterwards.
    pub next: String,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub name: String,
    /// Their groups.
    pub groups: Vec<String>,
    /// The CSRF token of its pages.
    pub csrf: String,
    /// When it ends (Unix seconds).
    pub expires_at: i64,
}

/// A personal API token (never its value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    /// Its id.
    pub id: i64,
    /// Whose.
    pub owner: String,
    /// Its holder's groups when it was made.
    #[serde(skip)]
    pub groups: Vec<String>,
    /// What its holder called it.
    pub name: String,
    /// The repositories it may act on.
    pub repos: Vec<String>,
    /// The most it may do there.
    pub role: String,
    /// Made (Unix seconds).
    pub created_at: i64,
    /// Ends (Unix seconds).
    pub expires_at: i64,
    /// Revoked (Unix seconds).
    pub revoked_at: Option<i64>,
}

/// What the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A build canceled.
    Cancel,
    /// A build restarted.
    Restart,
    /// One job of a build restarted.
    RestartJob,
    /// A fork's build approved.
    Approve,
    /// A build triggered through the API.
    Trigger,
    /// A personal token made.
    TokenCreated,
    /// A personal token revoked.
    TokenRevoked,
}

impl Action {
    /// Its name in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Restart => "restart",
            Action::RestartJob => "restart_job",
            Action::Approve => "approve",
            Action::Trigger => "trigger",
            Action::TokenCreated => "token_created",
            Action::TokenRevoked => "token_revoked",
        }
    }

    fn parse(name: &str) -> Result<Action, StoreError> {
        Ok(match name {
            "cancel" => Action::Cancel,
            "restart" => Action::Restart,
            "restart_job" => Action::RestartJob,
            "approve" => Action::Approve,
            "trigger" => Action::Trigger,
            "token_created" => Action::TokenCreated,
            "token_revoked" => Action::TokenRevoked,
            other => return Err(StoreError::Data(format!("unknown audit action {other:?}"))),
        })
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// When (Unix seconds).
    pub at: i64,
    /// Who.
    pub who: String,
    /// What.
    pub action: Action,
    /// Which repository.
    pub repo: String,
    /// Which build (its row id), if one.
    pub build_id: Option<i64>,
    /// More (a job's number, a token's name).
    pub detail: String,
}

fn list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn unlist(v: Value) -> Vec<String> {
    serde_json::from_str(&v.text().unwrap_or_default()).unwrap_or_default()
}

impl Store {
    /// The key session cookies are signed with: made once, by whichever node asks
    /// first, the same for every node.
    pub fn session_key(&mut self) -> Result<Vec<u8>, StoreError> {
        self.db().execute(
            "INSERT INTO runway_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[SESSION_KEY.into(), crate::auth::random(32).as_str().into()],
        )?;
        self.setting(SESSION_KEY)?
            .map(String::into_bytes)
            .ok_or_else(|| StoreError::Data("the session key was not kept".into()))
    }

    /// Remembers a sign-in under way by its `state` (kept as a digest); sign-ins older
    /// than [`LOGIN_SECS`] are forgotten. False (nothing kept) when [`MAX_LOGINS`] are
    /// under way: the table never grows without bound, whoever asks.
    pub fn begin_login(
        &mut self,
        state: &str,
        login: &Login,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.db().execute(
            "DELETE FROM logins WHERE created_at < $1",
            &[(now - LOGIN_SECS).into()],
        )?;
        let under_way = Value::count(self.db().query("SELECT COUNT(*) FROM logins", &[])?)?;
        if under_way >= MAX_LOGINS {
            return Ok(false);
        }
        self.db().execute(
            "INSERT INTO logins (state, nonce, verifier, next, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                crate::auth::digest(state).as_str().into(),
                login.nonce.as_str().into(),
                login.verifier.as_str().into(),
                login.next.as_str().into(),
                now.into(),
            ],
        )?;
        Ok(true)
    }

    /// The sign-in `state` began, taken: a second callback with it finds nothing.
    pub fn take_login(&mut self, state: &str, now: i64) -> Result<Option<Login>, StoreError> {
        let key = crate::auth::digest(state);
        let rows = self.db().query(
            "SELECT nonce, verifier, next FROM logins WHERE state = $1 AND created_at >= $2",
            &[key.as_str().into(), (now - LOGIN_SECS).into()],
        )?;
        // Whoever deletes it has it (two callbacks at once: one).
        if self.db().execute(
            "DELETE FROM logins WHERE state = $1",
            &[key.as_str().into()],
        )? == 0
        {
            return Ok(None);
        }
        Ok(rows.into_iter().next().map(|r| {
            let mut it = r.into_iter();
            let mut next = || it.next().and_then(|v| v.text()).unwrap_or_default();
            Login {
                nonce: next(),
                verifier: next(),
                next: next(),
            }
        }))
    }

    /// A new session, kept by the digest of its id.
    pub fn create_session(
        &mut self,
        id: &str,
        name: &str,
        groups: &[String],
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.db()
            .execute("DELETE FROM sessions WHERE expires_at < $1", &[now.into()])?;
        self.db().execute(
            "INSERT INTO sessions (id, name, groups, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                crate::auth::digest(id).as_str().into(),
                name.into(),
                list(groups).as_str().into(),
                csrf.into(),
                now.into(),
                expires_at.into(),
            ],
        )?;
        Ok(())
    }

    /// The live session with id `id`, if any.
    pub fn session(&self, id: &str, now: i64) -> Result<Option<Session>, StoreError> {
        let rows = self.db().query(
            "SELECT name, groups, csrf, expires_at FROM sessions WHERE id = $1 AND expires_at > $2",
            &[crate::auth::digest(id).as_str().into(), now.into()],
        )?;
        rows.into_iter()
            .next()
            .map(|r| {
                let mut it = r.into_iter();
                Ok(Session {
                    name: it.next().and_then(|v| v.text()).unwrap_or_default(),
                    groups: unlist(it.next().unwrap_or(Value::Null)),
                    csrf: it.next().and_then(|v| v.text()).unwrap_or_default(),
                    expires_at: it.next().unwrap_or(Value::Null).int()?,
                })
            })
            .transpose()
    }

    /// Ends session `id` (signing out): its cookie is refused from now on.
    pub fn end_session(&mut self, id: &str) -> Result<(), StoreError> {
        self.db().execute(
            "DELETE FROM sessions WHERE id = $1",
            &[crate::auth::digest(id).as_str().into()],
        )?;
        Ok(())
    }

    /// A personal token, kept by the digest of `secret`: its id.
    #[allow(clippy::too_many_arguments)]
    pub fn create_token(
        &mut self,
        secret: &str,
        owner: &str,
        groups: &[String],
        name: &str,
        repos: &[String],
        role: crate::auth::Role,
        now: i64,
        expires_at: i64,
    ) -> Result<i64, StoreError> {
        let rows = self.db().query(
            "INSERT INTO tokens (hash, owner, groups, name, repos, role, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[
                crate::auth::digest(secret).as_str().into(),
                owner.into(),
                list(groups).as_str().into(),
                name.into(),
                list(repos).as_str().into(),
                role.as_str().into(),
                now.into(),
                expires_at.into(),
            ],
        )?;
        Value::first(rows)
            .ok_or_else(|| StoreError::Data("a token was made without an id".into()))?
            .int()
    }

    const TOKEN_COLUMNS: &str =
        "id, owner, groups, name, repos, role, created_at, expires_at, revoked_at";

    fn tokens_where(&self, sql: &str, args: &[Value]) -> Result<Vec<Token>, StoreError> {
        self.db()
            .query(
                &format!("SELECT {} FROM tokens {sql}", Self::TOKEN_COLUMNS),
                args,
            )?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(Token {
                    id: next().int()?,
                    owner: next().text().unwrap_or_default(),
                    groups: unlist(next()),
                    name: next().text().unwrap_or_default(),
                    repos: unlist(next()),
                    role: next().text().unwrap_or_default(),
                    created_at: next().int()?,
                    expires_at: next().int()?,
                    revoked_at: next().opt_int()?,
                })
            })
            .collect()
    }

    /// The live (unrevoked, unexpired) token whose value is `secret`.
    pub fn token(&self, secret: &str, now: i64) -> Result<Option<Token>, StoreError> {
        Ok(self
            .tokens_where(
                "WHERE hash = $1 AND revoked_at IS NULL AND expires_at > $2",
                &[crate::auth::digest(secret).as_str().into(), now.into()],
            )?
            .into_iter()
            .next())
    }

    /// `owner`'s tokens, newest first.
    pub fn tokens_of(&self, owner: &str) -> Result<Vec<Token>, StoreError> {
        self.tokens_where("WHERE owner = $1 ORDER BY id DESC", &[owner.into()])
    }

    /// Revokes `owner`'s token `id`: its name, if it was theirs and live.
    pub fn revoke_token(
        &mut self,
        id: i64,
        owner: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let name = self
            .tokens_where(
                "WHERE id = $1 AND owner = $2 AND revoked_at IS NULL",
                &[id.into(), owner.into()],
            )?
            .into_iter()
            .next()
            .map(|t| t.name);
        if name.is_some() {
            self.db().execute(
                "UPDATE tokens SET revoked_at = $3 WHERE id = $1 AND owner = $2",
                &[id.into(), owner.into(), now.into()],
            )?;
        }
        Ok(name)
    }

    /// Adds an entry to the audit trail.
    pub fn audit(&mut self, entry: &Audit) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO audit (at, who, action, repo, build_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                entry.at.into(),
                entry.who.as_str().into(),
                entry.action.as_str().into(),
                entry.repo.as_str().into(),
                entry.build_id.into(),
                entry.detail.as_str().into(),
            ],
        )?;
        Ok(())
    }

    /// The audit trail of a build (by row id), or of a repository (its newest
    /// `limit`), oldest first.
    pub fn audit_trail(
        &self,
        build_id: Option<i64>,
        repo: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Audit>, StoreError> {
        let rows = self.db().query(
            "SELECT at, who, action, repo, build_id, detail FROM audit
             WHERE (CAST($1 AS BIGINT) IS NULL OR build_id = $1)
               AND (CAST($2 AS TEXT) IS NULL OR repo = $2)
             ORDER BY id DESC LIMIT $3",
            &[
                build_id.into(),
                repo.into(),
                (limit.min(i64::MAX as usize) as i64).into(),
            ],
        )?;
        let mut out = rows
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(Audit {
                    at: next().int()?,
                    who: next().text().unwrap_or_default(),
                    action: Action::parse(&next().text().unwrap_or_default())?,
                    repo: next().text().unwrap_or_default(),
                    build_id: next().opt_int()?,
                    detail: next().text().unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_is_taken_once_and_sessions_and_tokens_end() {
        let dir = tempfile::tempdir().expect("dir");
        let mut st = Store::open(dir.path()).expect("store");
        let key = st.session_key().expect("key");
        assert_eq!(st.session_key().expect("key"), key, "made once");
        let login = Login {
            nonce: "n".into(),
            verifier: "v".into(),
            next: "/".into(),
        };
        assert!(st.begin_login("s1", &login, 1000).expect("begin"));
        assert_eq!(
            st.take_login("s1", 1001).expect("take"),
            Some(login.clone())
        );
        assert_eq!(st.take_login("s1", 1002).expect("take"), None, "once");
        st.begin_login("s2", &login, 1000).expect("begin");
        assert_eq!(
            st.take_login("s2", 1000 + LOGIN_SECS + 1).expect("take"),
            None,
            "late"
        );

        st.create_session("sid", "rita@example.com", &["dev".into()], "c", 1000, 2000)
            .expect("session");
        let s = st.session("sid", 1500).expect("read").expect("live");
        assert_eq!(
            (s.name.as_str(), s.groups.as_slice()),
            ("rita@example.com", &["dev".to_string()][..])
        );
        assert_eq!(st.session("sid", 2000).expect("read"), None, "expired");
        st.end_session("sid").expect("end");
        assert_eq!(st.session("sid", 1500).expect("read"), None, "ended");

        let id = st
            .create_token(
                "rwp_x",
                "walt",
                &[],
                "ci",
                &["o/a".into()],
                crate::auth::Role::Write,
                1000,
                5000,
            )
            .expect("token");
        assert_eq!(
            st.token("rwp_x", 1500).expect("read").map(|t| t.id),
            Some(id)
        );
        assert_eq!(st.token("rwp_x", 5000).expect("read"), None, "expired");
        assert_eq!(
            st.revoke_token(id, "rita", 1600).expect("revoke"),
            None,
            "not hers"
        );
        assert_eq!(
            st.revoke_token(id, "walt", 1600)
                .expect("revoke")
                .as_deref(),
            Some("ci")
        );
        assert_eq!(st.token("rwp_x", 1700).expect("read"), None, "revoked");

        st.audit(&Audit {
            at: 1,
            who: "walt".into(),
            action: Action::Cancel,
            repo: "o/a".into(),
            build_id: Some(7),
            detail: String::new(),
        })
        .expect("audit");
        let trail = st.audit_trail(Some(7), None, 10).expect("trail");
        assert_eq!(trail.len(), 1);
        assert_eq!(trail[0].action, Action::Cancel);
    }
}
