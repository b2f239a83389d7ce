//! Who a request comes from and what they may do: the session cookie or a bearer token
//! read into a [`Who`], each read and write checked against the repository's roles
//! (a private repository is a 404 to those who may not read it), CSRF on every write a
//! session makes, the audit trail; and sign-in's own pages: `/auth/login`,
//! `/auth/callback`, `/auth/logout`, and people's personal tokens (`/tokens`,
//! `/api/tokens`). Without `[auth]` nothing changes: every page is public and the API
//! token does every write.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AppState, answer, hooks, pages};
use crate::auth::{self, Person, Role, Who};
use crate::store::access::{Action, Audit, Login};

/// Who a request comes from, and the session it came through (if it did).
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// Who.
    pub who: Who,
    /// The session's id and CSRF token, when the request brought a live session.
    session: Option<(String, String)>,
}

impl Viewer {
    fn anonymous() -> Viewer {
        Viewer {
            who: Who::Anonymous,
            session: None,
        }
    }

    /// The CSRF token of this viewer's pages.
    pub fn csrf(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, c)| c.as_str())
    }
}

fn refuse(code: StatusCode, why: impl Into<String>) -> Box<Response> {
    Box::new(answer(code, serde_json::json!({"error": why.into()})))
}

fn now() -> i64 {
    crate::store::Store::now()
}

impl AppState {
    /// The key session cookies are signed with (the store's, shared by every node).
    fn session_key(&self) -> Result<Vec<u8>, super::DbError> {
        if let Some(k) = self.session_key.get() {
            return Ok(k.clone());
        }
        let k = self.db(|s| s.session_key())?;
        Ok(self.session_key.get_or_init(|| k).clone())
    }
}

/// Who `headers` say the request comes from: a bearer token (the server's API token or
/// a person's own), else a session cookie, else nobody. A bearer token that is not
/// known is refused (401); a cookie that is forged, expired or ended counts for nothing.
pub(crate) fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Box<Response>> {
    if let Some(t) = hooks::bearer(headers) {
        if let Some(api) = state.cfg.api_token()
            && hooks::same(t.as_bytes(), api.as_bytes())
        {
            return Ok(Viewer {
                who: Who::ApiToken,
                session: None,
            });
        }
        if state.cfg.auth.is_some() && t.starts_with(auth::TOKEN_PREFIX) {
            return match state.db(|s| s.token(&t, now())) {
                Ok(Some(tok)) => Ok(Viewer {
                    who: Who::Token {
                        person: Person {
                            name: tok.owner,
                            groups: tok.groups,
                        },
                        repos: tok.repos,
                        role: Role::parse(&tok.role).unwrap_or(Role::Read),
                    },
                    session: None,
                }),
                Ok(None) => {
                    tracing::info!("a personal token was refused: unknown, expired or revoked");
                    Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "the token is unknown, expired or revoked",
                    ))
                }
                Err(e) => Err(Box::new(e.answer())),
            };
        }
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            if state.cfg.auth.is_some() {
                "the token is neither the API token nor a personal token"
            } else {
                "the token does not match api_token_env"
            },
        ));
    }
    if state.cfg.auth.is_none() {
        return Ok(Viewer::anonymous());
    }
    let Some(sealed) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
    else {
        return Ok(Viewer::anonymous());
    };
    let key = state.session_key().map_err(|e| Box::new(e.answer()))?;
    let Some(id) = auth::open(&key, sealed) else {
        tracing::info!("a session cookie was refused: it is not signed by this server");
        return Ok(Viewer::anonymous());
    };
    match state.db(|s| s.session(id, now())) {
        Ok(Some(s)) => Ok(Viewer {
            who: Who::Signed(Person {
                name: s.name,
                groups: s.groups,
            }),
            session: Some((id.to_string(), s.csrf)),
        }),
        Ok(None) => {
            tracing::info!("a session cookie was refused: the session ended or expired");
            Ok(Viewer::anonymous())
        }
        Err(e) => Err(Box::new(e.answer())),
    }
}

/// Whether `who` may read `repo`.
pub(crate) fn may_read(state: &AppState, repo: &str, who: &Who) -> bool {
    state.cfg.role(repo, who).is_some()
}

/// The repositories `who` may read, when that is not all of them (None: every one).
pub(crate) fn readable(state: &AppState, who: &Who) -> Option<Vec<String>> {
    if state.cfg.auth.is_none() || *who == Who::ApiToken {
        return None;
    }
    Some(
        state
            .cfg
            .repos
            .iter()
            .filter(|r| may_read(state, &r.name, who))
            .map(|r| r.name.clone())
            .collect(),
    )
}

/// A write made through a session: it carries the session's CSRF token (the
/// `X-CSRF-Token` header, or `form` from a form's `csrf_token`) and comes from this
/// site, not another.
fn same_site(
    state: &AppState,
    headers: &HeaderMap,
    v: &Viewer,
    form: Option<&str>,
) -> Result<(), Box<Response>> {
    let Some((_, want)) = &v.session else {
        return Ok(());
    };
    let text = |name| {
        headers
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
    };
    if text("sec-fetch-site") == Some("cross-site") {
        tracing::info!(who = %v.who.name(), "a cross-site request was refused");
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "cross-site requests are refused",
        ));
    }
    if let (Some(origin), Some(a)) = (text("origin"), &state.cfg.auth) {
        let ours = origin_of(&a.redirect_url);
        if origin != ours {
            tracing::info!(who = %v.who.name(), %origin, "a request from another origin was refused");
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("requests from {origin} are refused (this server is {ours})"),
            ));
        }
    }
    let given = text("x-csrf-token").or(form);
    match given {
        Some(g) if auth::same_secret(g, want) => Ok(()),
        Some(_) => {
            tracing::info!(who = %v.who.name(), "a write with a wrong CSRF token was refused");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "the CSRF token is not this session's",
            ))
        }
        None => {
            tracing::info!(who = %v.who.name(), "a write without a CSRF token was refused");
            Err(refuse(
                StatusCode::FORBIDDEN,
                "no CSRF token: send the page's csrf-token as X-CSRF-Token",
            ))
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// Who may do `need` to `repo` by this request: the API token without `[auth]` (as
/// ever); with it, their role. 404 to whoever may not read a private repository (it
/// does not exist for them), 401 to nobody, 403 to a reader.
pub(crate) fn require(
    state: &AppState,
    headers: &HeaderMap,
    repo: &str,
    need: Role,
    missing: &str,
) -> Result<Who, Box<Response>> {
    require_with(state, headers, b"", repo, need, missing)
}

/// [`require`] for a request whose `body` may be a form carrying `csrf_token`.
pub(crate) fn require_with(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    repo: &str,
    need: Role,
    missing: &str,
) -> Result<Who, Box<Response>> {
    if state.cfg.auth.is_none() {
        super::web::authorized(state, headers)?;
        return Ok(Who::ApiToken);
    }
    let v = viewer(state, headers)?;
    match state.cfg.role(repo, &v.who) {
        None => Err(refuse(StatusCode::NOT_FOUND, missing)),
        Some(r) if r >= need => {
            let is_form = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
            let f = if is_form { form(body) } else { Vec::new() };
            same_site(state, headers, &v, field(&f, "csrf_token"))?;
            Ok(v.who)
        }
        Some(_) if v.who == Who::Anonymous => Err(refuse(
            StatusCode::UNAUTHORIZED,
            format!("sign in (or send a token) to {} {repo}", verb(need)),
        )),
        Some(_) => Err(refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not {} {repo}: that needs the {} role",
                v.who.name(),
                verb(need),
                need.as_str()
            ),
        )),
    }
}

fn verb(role: Role) -> &'static str {
    match role {
        Role::Read => "read",
        Role::Write => "change builds of",
        Role::Admin => "administer",
    }
}

/// Admin of something: the API token, or (with `[auth]`) an admin of any repository.
pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<Who, Box<Response>> {
    if state.cfg.auth.is_none() {
        super::web::authorized(state, headers)?;
        return Ok(Who::ApiToken);
    }
    let v = viewer(state, headers)?;
    if state
        .cfg
        .repos
        .iter()
        .any(|r| state.cfg.role(&r.name, &v.who) == Some(Role::Admin))
    {
        return Ok(v.who);
    }
    Err(refuse(
        if v.who == Who::Anonymous {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        },
        "this needs the admin role (or the API token)",
    ))
}

/// Adds to the audit trail (a failure is logged: the action itself happened).
pub(crate) fn record(
    state: &AppState,
    who: &Who,
    action: Action,
    repo: &str,
    build_id: Option<i64>,
    detail: &str,
) {
    let entry = Audit {
        at: now(),
        who: who.name(),
        action,
        repo: repo.into(),
        build_id,
        detail: detail.into(),
    };
    tracing::info!(who = %entry.who, action = action.as_str(), repo, build = ?build_id, detail, "audit");
    if let Err(e) = state.db(|s| s.audit(&entry)) {
        tracing::warn!(error = %e, "the audit trail could not be written");
    }
}

/// The audit trail as the API gives it.
pub(crate) fn audit_json(all: &[Audit]) -> serde_json::Value {
    all.iter()
        .map(|a| {
            serde_json::json!({
                "at": crate::clock::utc(a.at), "who": a.who, "action": a.action.as_str(),
                "repo": a.repo, "detail": a.detail,
            })
        })
        .collect()
}

/// The bar at the top of a page: who is signed in (and sign-out), or sign-in.
pub(crate) fn bar(state: &AppState, v: &Viewer, here: &str) -> pages::Bar {
    pages::Bar {
        signing_in: state.cfg.auth.is_some(),
        name: match &v.who {
            Who::Signed(p) => Some(p.name.clone()),
            _ => None,
        },
        csrf: v.csrf().map(str::to_string),
        here: here.to_string(),
    }
}

/// A page saying one thing, with the sign-in link when the server has sign-in.
fn page(code: StatusCode, title: &str, body: &str) -> Response {
    let bar = pages::Bar {
        signing_in: true,
        here: "/".into(),
        ..pages::Bar::default()
    };
    (code, Html(pages::dress(pages::message(title, body), &bar))).into_response()
}

fn no_sign_in() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message(
            "Sign-in is not set up",
            "This server has no [auth] in runway.toml: every page is public, and the API token does every write.",
        )),
    )
        .into_response()
}

/// Whether cookies are `Secure` (the server is reached over https).
fn secure(state: &AppState) -> bool {
    state.cfg.auth.as_ref().is_some_and(|a| a.secure())
}

/// `?next=/builds/3`: where to go once signed in.
#[derive(Deserialize, Default)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/login`: off to the issuer, with a fresh state, nonce and PKCE verifier
/// (kept in the store, taken once by the callback) and a cookie tying the callback to
/// this browser.
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(client) = state.oidc.as_deref() else {
        return no_sign_in();
    };
    let (st, login) = (
        auth::random(32),
        Login {
            nonce: auth::random(32),
            verifier: auth::random(48),
            next: auth::local_path(q.next.as_deref().unwrap_or("/")),
        },
    );
    let url =
        match super::off_the_runtime(|| client.authorize_url(&st, &login.nonce, &login.verifier)) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "sign-in cannot start: the issuer cannot be asked");
                return page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in is unavailable",
                    &format!("The issuer cannot be asked now: {e}"),
                );
            }
        };
    match state.db(|s| s.begin_login(&st, &login, now())) {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("sign-in refused: too many sign-ins under way");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is busy",
                "Too many sign-ins are under way; try again in a few minutes.",
            );
        }
        Err(e) => return e.answer(),
    }
    let key = match state.session_key() {
        Ok(k) => k,
        Err(e) => return e.answer(),
    };
    let secure = secure(&state);
    let cookie = auth::set_cookie(
        auth::LOGIN_COOKIE,
        &auth::seal(&key, &st),
        "/auth",
        crate::store::access::LOGIN_SECS,
        secure,
    );
    let mut r = Redirect::to(&url).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a cookie of base64url"),
    );
    r
}

/// `?code=…&state=…` (or `?error=…`): the issuer's answer.
#[derive(Deserialize, Default)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/callback`: the sign-in this browser started, taken once; the code
/// exchanged and the ID token checked; a session made.
pub(super) async fn callback(
    State(state): State<Arc<AppState>>,
    Query(q): Query<Callback>,
    headers: HeaderMap,
) -> Response {
    let Some(client) = state.oidc.as_deref() else {
        return no_sign_in();
    };
    let refused = |why: String| {
        tracing::warn!("sign-in refused: {why}");
        page(StatusCode::FORBIDDEN, "Sign-in refused", &why)
    };
    if let Some(e) = q.error {
        // Whoever calls the callback writes these: one line, bounded, in the log.
        let plain = |t: &str| -> String {
            t.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(200)
                .collect()
        };
        return refused(format!(
            "the issuer said {}: {}",
            plain(&e),
            plain(&q.error_description.unwrap_or_default())
        ));
    }
    let (Some(code), Some(st)) = (q.code, q.state) else {
        return refused("the callback has no code or state".into());
    };
    let key = match state.session_key() {
        Ok(k) => k,
        Err(e) => return e.answer(),
    };
    let started_here = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::LOGIN_COOKIE))
        .and_then(|c| auth::open(&key, c))
        .is_some_and(|s| auth::same_secret(s, &st));
    if !started_here {
        return refused("this sign-in was not started in this browser".into());
    }
    let login = match state.db(|s| s.take_login(&st, now())) {
        Ok(Some(l)) => l,
        Ok(None) => return refused("this sign-in is unknown, used already or too old".into()),
        Err(e) => return e.answer(),
    };
    let claims =
        match super::off_the_runtime(|| client.finish(&code, &login.verifier, &login.nonce, now()))
        {
            Ok(c) => c,
            Err(e) => return refused(e.to_string()),
        };
    let name = claims.name();
    let groups = claims.groups.clone().unwrap_or_default();
    let (id, csrf) = (auth::random(32), auth::random(32));
    let hours = state.cfg.auth.as_ref().map_or(12, |a| a.session_hours) as i64;
    let t = now();
    if let Err(e) = state.db(|s| s.create_session(&id, &name, &groups, &csrf, t, t + hours * 3600))
    {
        return e.answer();
    }
    tracing::info!(who = %name, groups = ?groups, "signed in");
    let secure = secure(&state);
    let mut r = Redirect::to(&login.next).into_response();
    let h = r.headers_mut();
    for c in [
        auth::set_cookie(
            auth::SESSION_COOKIE,
            &auth::seal(&key, &id),
            "/",
            hours * 3600,
            secure,
        ),
        auth::set_cookie(auth::LOGIN_COOKIE, "", "/auth", 0, secure),
    ] {
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_str(&c).expect("a cookie of base64url"),
        );
    }
    r
}

/// A form's body (`application/x-www-form-urlencoded`): its fields in order.
fn form(body: &[u8]) -> Vec<(String, String)> {
    let dec = |s: &str| crate::mask::percent_decode(s, true);
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `POST /auth/logout` (a form with `csrf_token`): the session ends on the server and
/// its cookie is removed.
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let v = match viewer(&state, &headers) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let f = form(&body);
    if let Some((id, _)) = &v.session {
        if let Err(r) = same_site(&state, &headers, &v, field(&f, "csrf_token")) {
            return *r;
        }
        if let Err(e) = state.db(|s| s.end_session(id)) {
            return e.answer();
        }
        tracing::info!(who = %v.who.name(), "signed out");
    }
    let secure = secure(&state);
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&auth::set_cookie(auth::SESSION_COOKIE, "", "/", 0, secure))
            .expect("a cookie"),
    );
    r
}

/// The signed-in person a tokens request is from (sessions only: a token does not make
/// tokens), or the refusal.
fn person(state: &AppState, headers: &HeaderMap) -> Result<(Viewer, Person), Box<Response>> {
    if state.cfg.auth.is_none() {
        return Err(Box::new(no_sign_in()));
    }
    let v = viewer(state, headers)?;
    match &v.who {
        Who::Signed(p) => {
            let p = p.clone();
            Ok((v, p))
        }
        _ => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "personal tokens are made and revoked by a signed-in person (GET /auth/login)",
        )),
    }
}

/// A form posted by a signed-in person from one of this site's pages (its CSRF token
/// right): who, and the form's fields.
type SignedForm = (Viewer, Person, Vec<(String, String)>);

fn signed_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<SignedForm, Box<Response>> {
    let (v, p) = person(state, headers)?;
    let f = form(body);
    same_site(state, headers, &v, field(&f, "csrf_token"))?;
    Ok((v, p, f))
}

/// What a new token is for.
#[derive(Debug, Deserialize)]
pub(super) struct NewToken {
    name: String,
    repos: Vec<String>,
    role: String,
    #[serde(default = "default_days")]
    expires_in_days: i64,
}

fn default_days() -> i64 {
    30
}

/// The most days a personal token may live.
const MAX_TOKEN_DAYS: i64 = 366;

/// A token made for `p` as `ask` says, within what `p` may do: its value (shown once).
fn make_token(
    state: &AppState,
    v: &Viewer,
    p: &Person,
    ask: &NewToken,
) -> Result<(i64, String), Box<Response>> {
    let bad = |why: String| refuse(StatusCode::BAD_REQUEST, why);
    let role = Role::parse(&ask.role)
        .ok_or_else(|| bad(format!("role {:?} is not read, write or admin", ask.role)))?;
    if ask.name.trim().is_empty() || ask.name.len() > 100 {
        return Err(bad("a token needs a name (at most 100 characters)".into()));
    }
    if ask.repos.is_empty() || ask.repos.len() > 100 {
        return Err(bad(
            "a token names the repositories it may act on (1 to 100)".into(),
        ));
    }
    if !(1..=MAX_TOKEN_DAYS).contains(&ask.expires_in_days) {
        return Err(bad(format!(
            "expires_in_days must be 1 to {MAX_TOKEN_DAYS}"
        )));
    }
    for r in &ask.repos {
        match state.cfg.role(r, &v.who) {
            None => {
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    format!("there is no repository {r}"),
                ));
            }
            Some(have) if have < role => {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} has {} on {r}, not {}",
                        p.name,
                        have.as_str(),
                        role.as_str()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let secret = format!("{}{}", auth::TOKEN_PREFIX, auth::random(32));
    let t = now();
    let id = state
        .db(|s| {
            s.create_token(
                &secret,
                &p.name,
                &p.groups,
                ask.name.trim(),
                &ask.repos,
                role,
                t,
                t + ask.expires_in_days * 86_400,
            )
        })
        .map_err(|e| Box::new(e.answer()))?;
    for r in &ask.repos {
        record(
            state,
            &v.who,
            Action::TokenCreated,
            r,
            None,
            ask.name.trim(),
        );
    }
    Ok((id, secret))
}

/// `GET /api/tokens`: the signed-in person's tokens (never their values).
pub(super) async fn api_tokens(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (_, p) = match person(&state, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match state.db(|s| s.tokens_of(&p.name)) {
        Ok(t) => answer(StatusCode::OK, serde_json::json!({ "tokens": t })),
        Err(e) => e.answer(),
    }
}

/// `POST /api/tokens` `{"name", "repos": [..], "role", "expires_in_days"}` (a session
/// with its CSRF token): `201 {"id", "token"}`, the value shown this once.
pub(super) async fn api_create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (v, p) = match person(&state, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(r) = same_site(&state, &headers, &v, None) {
        return *r;
    }
    let ask: NewToken = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return *refuse(StatusCode::BAD_REQUEST, format!("the body: {e}")),
    };
    match make_token(&state, &v, &p, &ask) {
        Ok((id, token)) => answer(
            StatusCode::CREATED,
            serde_json::json!({"id": id, "token": token}),
        ),
        Err(r) => *r,
    }
}

/// `POST /api/tokens/ID/revoke`: refused from the next request on, on every node.
pub(super) async fn api_revoke_token(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (v, p, _) = match signed_form(&state, &headers, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match state.db(|s| s.revoke_token(id, &p.name, now())) {
        Ok(Some(name)) => {
            record(&state, &v.who, Action::TokenRevoked, "", None, &name);
            if headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("text/html"))
            {
                return Redirect::to("/tokens").into_response();
            }
            answer(
                StatusCode::OK,
                serde_json::json!({"revoked": true, "id": id}),
            )
        }
        Ok(None) => *refuse(
            StatusCode::NOT_FOUND,
            format!("you have no live token {id}"),
        ),
        Err(e) => e.answer(),
    }
}

/// `GET /tokens`: the signed-in person's tokens, a form to make one, a button to
/// revoke each.
pub(super) async fn tokens_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Response {
    let (v, p) = match person(&state, &headers) {
        Ok(x) => x,
        Err(_) if state.cfg.auth.is_some() => {
            return Redirect::to("/auth/login?next=/tokens").into_response();
        }
        Err(r) => return *r,
    };
    tokens_view(&state, &v, &p, None)
}

fn tokens_view(state: &AppState, v: &Viewer, p: &Person, made: Option<&str>) -> Response {
    let tokens = match state.db(|s| s.tokens_of(&p.name)) {
        Ok(t) => t,
        Err(e) => return e.answer(),
    };
    let repos: Vec<(String, Role)> = state
        .cfg
        .repos
        .iter()
        .filter_map(|r| {
            state
                .cfg
                .role(&r.name, &v.who)
                .map(|role| (r.name.clone(), role))
        })
        .collect();
    let html = pages::tokens(&pages::TokensView {
        tokens: &tokens,
        repos: &repos,
        made,
        now: now(),
        csrf: v.csrf().unwrap_or_default(),
    });
    Html(pages::dress(html, &bar(state, v, "/tokens"))).into_response()
}

/// `POST /tokens` (the page's form): a token made, its value shown once.
pub(super) async fn tokens_form(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (v, p, f) = match signed_form(&state, &headers, &body) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let ask = NewToken {
        name: field(&f, "name").unwrap_or_default().to_string(),
        repos: f
            .iter()
            .filter(|(k, _)| k == "repo")
            .map(|(_, v)| v.clone())
            .collect(),
        role: field(&f, "role").unwrap_or("read").to_string(),
        expires_in_days: field(&f, "expires_in_days")
            .and_then(|d| d.parse().ok())
            .unwrap_or(30),
    };
    match make_token(&state, &v, &p, &ask) {
        Ok((_, token)) => tokens_view(&state, &v, &p, Some(&token)),
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_decoded_and_origins_read() {
        let f = form(b"csrf_token=a%2Bb&repo=o%2Fa&repo=o/b&name=my+token");
        assert_eq!(field(&f, "csrf_token"), Some("a+b"));
        assert_eq!(field(&f, "name"), Some("my token"));
        assert_eq!(f.iter().filter(|(k, _)| k == "repo").count(), 2);
        assert_eq!(
            origin_of("https://ci.example.com/auth/callback"),
            "https://ci.example.com"
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080/auth/callback"),
            "http://127.0.0.1:8080"
        );
    }
}
