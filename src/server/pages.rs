//! The server's HTML: the repositories with their latest build and the builds list (a
//! page at a time, kept up to date over `GET /events`), and a build page: its header
//! (why it ended so, its commit, what its deploys and its mail did), its jobs by stage,
//! cancel and restart, and its log, live while it runs. The log's rendering (ANSI
//! colours through the vendored ansi_up, line links, folds with durations, the failing
//! command marked, the tail followed) is `assets/app.js`; rows are rendered here only,
//! also for the live list.

use crate::store::{BuildRow, JobRow};

/// Builds per page of the list.
pub const PAGE: usize = 50;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
/// ansi_up 6.0.6 (MIT, `assets/ansi_up.LICENSE`), from the npm registry.
const ANSI_UP_JS: &str = include_str!("assets/ansi_up.js");

/// A static asset by name: its content type and body.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        "ansi_up.js" => Some(("text/javascript; charset=utf-8", ANSI_UP_JS)),
        "app.css" => Some(("text/css; charset=utf-8", APP_CSS)),
        _ => None,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A whole page: `data` are the body's data attributes (what app.js does there).
fn page(title: &str, data: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\"><title>{}</title>\
         <link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body {data}>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">runway</a></header><main>{body}</main>\
         <script type=\"module\" src=\"/assets/app.js\"></script></body></html>",
        esc(title)
    )
}

/// JSON to embed in a `<script>`: `<`, `>` and `&` escaped as `\u003c`…, so no text a
/// job prints (`</script>`, `<!--<script>`) can end or change the script block.
pub fn script_json(v: &serde_json::Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// How long a build took: `42s`, `3m 05s`; a build still going says its state.
fn took(r: &BuildRow) -> String {
    let Some(f) = r.finished_at else {
        return if r.state.is_active() {
            r.state.as_str().replace('_', " ")
        } else {
            "-".into()
        };
    };
    let s = (f - r.started_at).max(0);
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

fn href(r: &BuildRow) -> String {
    esc(&crate::notify::build_url("", &r.repo, r.number))
}

fn badge(state: &str) -> String {
    format!(
        "<span class=\"badge {state}\">{}</span>",
        state.replace('_', " ")
    )
}

fn when(secs: i64) -> String {
    let iso = crate::clock::utc(secs);
    format!("<time datetime=\"{iso}\" title=\"{iso}\">{iso}</time>")
}

/// Branch or `tag T`.
fn what(r: &BuildRow) -> String {
    r.tag
        .as_deref()
        .map(|t| format!("tag {t}"))
        .or(r.branch.clone())
        .unwrap_or_default()
}

/// One build as a row of the list (also sent to open lists when it changes).
pub fn row_html(r: &BuildRow) -> String {
    let first_line = r.message.lines().next().unwrap_or("");
    format!(
        "<tr data-id=\"{id}\"><td>{badge}</td><td><a href=\"{href}\">#{n}</a></td><td>{repo}</td>\
         <td><code>{sha}</code> {msg}</td><td class=\"hide-narrow\">{author}</td><td>{what}</td>\
         <td class=\"hide-narrow\">{event}</td><td>{when}</td><td>{took}</td></tr>",
        id = r.id,
        badge = badge(r.state.as_str()),
        href = href(r),
        n = r.number,
        repo = esc(&r.repo),
        sha = esc(&r.commit[..r.commit.len().min(7)]),
        msg = esc(first_line),
        author = esc(&r.author),
        what = esc(&what(r)),
        event = esc(&r.event),
        when = when(r.started_at),
        took = took(r),
    )
}

/// A repository with its latest build, for the repositories at the top of the list.
pub fn repo_html(r: &BuildRow) -> String {
    format!(
        "<li data-repo=\"{repo}\" data-id=\"{id}\"><a class=\"name\" href=\"/?repo={q}\">{repo}</a>\
         <a href=\"{href}\">{badge} #{n}</a> <span class=\"muted\">{what} &middot; {when}</span></li>",
        repo = esc(&r.repo),
        id = r.id,
        q = esc(&crate::notify::url_component(&r.repo)),
        href = href(r),
        badge = badge(r.state.as_str()),
        n = r.number,
        what = esc(&what(r)),
        when = when(r.started_at),
    )
}

/// What the builds list shows.
pub struct List<'a> {
    /// The page's builds, newest first (one more than a page when there are older ones).
    pub rows: &'a [BuildRow],
    /// Each repository's latest build.
    pub latest: &'a [BuildRow],
    /// The configured repositories, for the filter.
    pub repos: &'a [String],
    /// The repository shown, when one is.
    pub only: Option<&'a str>,
    /// The branch shown, when one is.
    pub branch: Option<&'a str>,
    /// The shown repository's branches, each with its latest push build.
    pub branches: &'a [BuildRow],
    /// The page starts after this build (None: the newest).
    pub before: Option<i64>,
    /// The changes the page was read after: its stream of changes starts there.
    pub seen: &'a str,
}

/// The repositories with their latest build, then the builds (filtered by repository,
/// a page at a time).
pub fn index(l: &List) -> String {
    let mut b = String::new();
    if l.only.is_none() {
        b.push_str("<h2>Repositories</h2><ul class=\"repos\">");
        for r in l.latest {
            b.push_str(&repo_html(r));
        }
        b.push_str("</ul>");
    }
    if let Some(repo) = l.only
        && !l.branches.is_empty()
    {
        b.push_str("<h2>Branches</h2><ul class=\"branches\" id=\"branches\">");
        for r in l.branches {
            let name = r.branch.as_deref().unwrap_or_default();
            b.push_str(&format!(
                "<li data-branch=\"{}\"{}><a href=\"/?repo={}&amp;branch={}\">{}</a> {} <a href=\"{}\">#{}</a> {}</li>",
                esc(name),
                if l.branch == Some(name) { " class=\"on\"" } else { "" },
                crate::notify::url_component(repo),
                crate::notify::url_component(name),
                esc(name),
                badge(r.state.as_str()),
                esc(&crate::notify::build_url("", &r.repo, r.number)),
                r.number,
                when(r.started_at),
            ));
        }
        b.push_str("</ul>");
    }
    let title = match (l.only, l.branch) {
        (Some(r), Some(br)) => format!("Builds of {} on {}", esc(r), esc(br)),
        (Some(r), None) => format!("Builds of {}", esc(r)),
        (None, Some(br)) => format!("Builds on {}", esc(br)),
        (None, None) => "Builds".to_string(),
    };
    b.push_str(&format!("<h2>{title}</h2>{}", filter(l)));
    b.push_str(
        "<div class=\"scroll\"><table id=\"builds\"><thead><tr><th>State</th><th>#</th><th>Repository</th>\
         <th>Commit</th><th class=\"hide-narrow\">Author</th><th>Branch</th><th class=\"hide-narrow\">Event</th>\
         <th>Started</th><th>Duration</th></tr></thead><tbody>",
    );
    let shown = &l.rows[..l.rows.len().min(PAGE)];
    for r in shown {
        b.push_str(&row_html(r));
    }
    b.push_str("</tbody></table></div>");
    if shown.is_empty() {
        b.push_str("<p id=\"empty\" class=\"muted\">No builds yet: push, or send a webhook.</p>");
    }
    b.push_str(&pages_nav(l, shown));
    let data = format!(
        "data-page=\"index\" data-repo=\"{}\" data-branch=\"{}\" data-first=\"{}\" data-seen=\"{}\"",
        esc(l.only.unwrap_or("")),
        esc(l.branch.unwrap_or("")),
        l.before.is_none(),
        esc(l.seen)
    );
    page("runway builds", &data, &b)
}

/// The repository filter: all, or one.
fn filter(l: &List) -> String {
    let link = |label: &str, href: &str, on: bool| {
        format!(
            "<a href=\"{}\"{}>{}</a> ",
            esc(href),
            if on { " class=\"on\"" } else { "" },
            esc(label)
        )
    };
    let mut b = String::from("<nav class=\"filter\" id=\"repos\">");
    b.push_str(&link("all repositories", "/", l.only.is_none()));
    for r in l.repos {
        let href = format!("/?repo={}", crate::notify::url_component(r));
        b.push_str(&link(r, &href, l.only == Some(r.as_str())));
    }
    b.push_str("</nav>");
    b
}

/// Links to the newest page and to older builds.
fn pages_nav(l: &List, shown: &[BuildRow]) -> String {
    let mut repo_q = l
        .only
        .map(|r| format!("repo={}&", crate::notify::url_component(r)))
        .unwrap_or_default();
    if let Some(br) = l.branch {
        repo_q.push_str(&format!("branch={}&", crate::notify::url_component(br)));
    }
    let mut b = String::from("<nav class=\"pages\">");
    if l.before.is_some() {
        b.push_str(&format!(
            "<a href=\"/?{}\">Newest builds</a>",
            esc(repo_q.trim_end_matches('&'))
        ));
    }
    if l.rows.len() > PAGE
        && let Some(last) = shown.last()
    {
        b.push_str(&format!(
            "<a href=\"/?{}before={}\" id=\"older\">Older builds &rarr;</a>",
            esc(&repo_q),
            last.id
        ));
    }
    b.push_str("</nav>");
    b
}

/// The top bar's part about the person: who is signed in and a sign-out button, or a
/// sign-in link (nothing without `[auth]`); and the page's CSRF token.
#[derive(Debug, Clone, Default)]
pub struct Bar {
    /// Whether the server has sign-in.
    pub signing_in: bool,
    /// Who is signed in.
    pub name: Option<String>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
    /// This page's path (where sign-in comes back to).
    pub here: String,
}

/// `html` (a whole page) with the bar in its header and the CSRF token in its head.
pub fn dress(html: String, bar: &Bar) -> String {
    if !bar.signing_in {
        return html;
    }
    let who = match (&bar.name, &bar.csrf) {
        (Some(name), Some(csrf)) => format!(
            "<span class=\"who\"><span id=\"signed-in\">{}</span> <a href=\"/tokens\">Tokens</a> \
             <form method=\"post\" action=\"/auth/logout\" class=\"inline\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
             <button id=\"sign-out\" type=\"submit\">Sign out</button></form></span>",
            esc(name),
            esc(csrf)
        ),
        _ => format!(
            "<span class=\"who\"><a id=\"sign-in\" href=\"/auth/login?next={}\">Sign in</a></span>",
            crate::mask::percent_encode(&bar.here, true, false, false)
        ),
    };
    let meta = bar
        .csrf
        .as_ref()
        .map(|c| format!("<meta name=\"csrf-token\" content=\"{}\">", esc(c)))
        .unwrap_or_default();
    html.replacen("</head>", &format!("{meta}</head>"), 1)
        .replacen("</header>", &format!("{who}</header>"), 1)
}

/// A page saying one thing (sign-in's answers).
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        "",
        &format!(
            "<h1>{}</h1><p id=\"message\">{}</p><p><a href=\"/\">All builds</a></p>",
            esc(title),
            esc(text)
        ),
    )
}

/// What the tokens page shows.
pub struct TokensView<'a> {
    /// The person's tokens.
    pub tokens: &'a [crate::store::access::Token],
    /// The repositories they may act on, with their role.
    pub repos: &'a [(String, crate::auth::Role)],
    /// A token just made: its value, shown this once.
    pub made: Option<&'a str>,
    /// Now (Unix seconds).
    pub now: i64,
    /// The session's CSRF token, for the forms.
    pub csrf: &'a str,
}

/// `/tokens`: a person's API tokens, a form to make one, a button to revoke each.
pub fn tokens(v: &TokensView<'_>) -> String {
    let mut b = String::from("<h1>Your API tokens</h1>");
    if let Some(t) = v.made {
        b.push_str(&format!(
            "<p class=\"made\">Your new token, shown this once: <code id=\"new-token\">{}</code></p>",
            esc(t)
        ));
    }
    b.push_str("<table id=\"tokens\"><tr><th>Name</th><th>Repositories</th><th>Role</th><th>Expires</th><th></th></tr>");
    for t in v.tokens {
        let state = match t.revoked_at {
            Some(at) => format!("revoked {}", crate::clock::utc(at)),
            None if t.expires_at <= v.now => format!("expired {}", crate::clock::utc(t.expires_at)),
            None => format!(
                "<form method=\"post\" action=\"/api/tokens/{}/revoke\" class=\"inline\"><input type=\"hidden\" name=\"csrf_token\" value=\"{}\"><button type=\"submit\" id=\"revoke-{}\">Revoke</button></form>",
                t.id,
                esc(v.csrf),
                t.id
            ),
        };
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&t.name),
            esc(&t.repos.join(", ")),
            esc(&t.role),
            crate::clock::utc(t.expires_at),
        ));
    }
    b.push_str(&format!(
        "</table><h2>Make a token</h2><form method=\"post\" action=\"/tokens\" id=\"new\">\
        <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
        <p><label>Name <input name=\"name\" required maxlength=\"100\"></label></p><p>",
        esc(v.csrf)
    ));
    for (r, role) in v.repos {
        b.push_str(&format!(
            "<label><input type=\"checkbox\" name=\"repo\" value=\"{r}\"> {r} <span class=\"muted\">({})</span></label><br>",
            role.as_str(),
            r = esc(r)
        ));
    }
    b.push_str("</p><p><label>Role <select name=\"role\"><option>read</option><option>write</option><option>admin</option></select></label> \
        <label>Days <input name=\"expires_in_days\" type=\"number\" min=\"1\" max=\"366\" value=\"30\"></label></p>\
        <p><button type=\"submit\" id=\"make\">Make token</button></p></form>");
    page("API tokens", "", &b)
}

/// Who did what to a build (the audit trail).
pub fn audit(all: &[crate::store::access::Audit]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let items: String = all
        .iter()
        .map(|a| {
            let detail = if a.detail.is_empty() {
                String::new()
            } else {
                format!(" {}", esc(&a.detail))
            };
            format!(
                "<li>{} <b>{}</b> {}{detail}</li>",
                crate::clock::utc(a.at),
                esc(&a.who),
                a.action.as_str().replace('_', " "),
            )
        })
        .collect();
    format!("<details id=\"audit\" open><summary>Activity</summary><ul>{items}</ul></details>")
}

/// A missing build.
pub fn not_found(n: u64) -> String {
    page(
        "not found",
        "",
        &format!("<h1>There is no build #{n}</h1><p><a href=\"/\">All builds</a></p>"),
    )
}

/// The page shown when the build store cannot be read: what happened, never an empty
/// list that would look like no builds.
pub fn store_unavailable(why: &str) -> String {
    page(
        "build store unreachable",
        "",
        &format!(
            "<h1>The build store is unreachable</h1><p>{}</p><p>runway keeps trying; this page works again when it is back. <a href=\"\">Reload</a></p>",
            esc(why)
        ),
    )
}

/// The header of a build page: state, why, commit, people, times, mail, buttons.
fn header(r: &BuildRow, jobs: &[JobRow], can_change: bool) -> String {
    let first_line = r.message.lines().next().unwrap_or("");
    let mut b = format!(
        "<h1>{} {} <span class=\"muted\">#{}</span></h1>",
        badge(r.state.as_str()),
        esc(&r.repo),
        r.number,
    );
    if let Some(reason) = &r.reason {
        b.push_str(&format!("<p class=\"why\">{}</p>", esc(reason)));
    } else if let Some(j) = jobs
        .iter()
        .find(|j| j.result == r.state.as_str() && !j.reason.is_empty())
    {
        // Why in the header: the first job that ended as the build did.
        b.push_str(&format!(
            "<p id=\"why\" class=\"why\"><span class=\"{st}\">{st}</span>: {} in <a href=\"#job={n}\">job {n}</a></p>",
            esc(&j.reason),
            st = r.state.as_str(),
            n = esc(&j.number),
        ));
    }
    b.push_str(&format!(
        "<div class=\"facts\"><span><code>{sha}</code> <b>{msg}</b></span><span>{author}</span>\
         <span>{what}</span><span>{event}</span><span>{started} {when}</span><span>{took}</span>{mail}</div>",
        sha = esc(&r.commit[..r.commit.len().min(7)]),
        msg = esc(first_line),
        author = esc(&r.author),
        what = esc(&what(r)),
        event = esc(&r.event),
        started = if matches!(
            r.state,
            crate::store::Status::Queued | crate::store::Status::Awaiting
        ) {
            "queued"
        } else {
            "started"
        },
        when = when(r.started_at),
        // A build still going has taken nothing yet: its state (never "took running").
        took = match r.finished_at {
            Some(_) => format!("took {}", took(r)),
            None => took(r),
        },
        mail = if r.mail.is_empty() {
            String::new()
        } else {
            format!("<span id=\"mail\">mail: {}</span>", esc(&r.mail))
        },
    ));
    if can_change {
        let (act, label) = if r.state.is_active() {
            ("cancel", "Cancel")
        } else {
            ("restart", "Restart")
        };
        // A fork's pull request awaiting approval: approve it (or cancel it).
        let approve = if r.state == crate::store::Status::Awaiting {
            "<button data-act=\"approve\" id=\"approve\">Approve and run</button>"
        } else {
            ""
        };
        // An ended build's jobs, each restarted on its own (the others keep theirs).
        let jobs_again: String = if r.state.is_active() {
            String::new()
        } else {
            jobs.iter()
                .map(|j| {
                    format!(
                        "<button data-act=\"jobs/{n}/restart\" id=\"restart-job-{id}\">Restart job {n}</button>",
                        n = esc(&j.number),
                        id = esc(&j.number.replace('.', "-")),
                    )
                })
                .collect()
        };
        b.push_str(&format!(
            "<div class=\"actions\">{approve}<button data-act=\"{act}\" id=\"{act}\">{label}</button>{jobs_again}<span class=\"said\"></span></div>"
        ));
    }
    b
}

/// The jobs by stage: number and name, matrix values and env, result, duration, why,
/// and what each deploy did.
fn jobs_html(jobs: &[JobRow]) -> String {
    let mut stages: Vec<&str> = Vec::new();
    for j in jobs {
        if !stages.contains(&j.stage.as_str()) {
            stages.push(&j.stage);
        }
    }
    // The deploys column only when a job has a deploy.
    let deploys = jobs.iter().any(|j| !j.deploys.is_empty());
    let mut b = String::from("<section id=\"jobs\">");
    for stage in stages {
        if !stage.is_empty() {
            b.push_str(&format!("<h3>Stage: {}</h3>", esc(stage)));
        }
        b.push_str(&format!(
            "<div class=\"scroll\"><table><thead><tr><th>Job</th><th>Matrix and env</th><th>Result</th>\
             <th>Duration</th><th>Why</th>{}</tr></thead><tbody>",
            if deploys { "<th>Deploys</th>" } else { "" }
        ));
        for j in jobs.iter().filter(|j| j.stage == stage) {
            b.push_str(&job_row(j, deploys));
        }
        b.push_str("</tbody></table></div>");
    }
    b.push_str("</section>");
    b
}

fn job_row(j: &JobRow, with_deploys: bool) -> String {
    let deploys: String = j
        .deploys
        .iter()
        .map(|d| format!("<li>{}</li>", esc(d)))
        .collect();
    format!(
        "<tr><td><a href=\"#job={n}\">{n}</a>{name}</td><td><code>{env}</code></td><td>{r}</td>\
         <td>{d:.1}s</td><td>{why}</td>{deploys}</tr>",
        n = esc(&j.number),
        name = j
            .name
            .as_deref()
            .map(|n| format!(" {}", esc(n)))
            .unwrap_or_default(),
        env = esc(&j.env),
        r = badge(&esc(&j.result)),
        d = j.duration_ms as f64 / 1000.0,
        why = match &j.worker {
            Some(w) => format!(
                "{} <span class=\"worker\">on {}</span>",
                esc(&j.reason),
                esc(&on_workers(w, &j.workers))
            ),
            None => esc(&j.reason),
        },
        deploys = if with_deploys {
            format!("<td><ul class=\"deploys\">{deploys}</ul></td>")
        } else {
            String::new()
        },
    )
}

/// Who ran a job: its worker, or each attempt's (`a (attempt 1), then b`).
fn on_workers(last: &str, all: &[String]) -> String {
    match all {
        [] | [_] => last.to_string(),
        _ => all
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{w} (attempt {})", i + 1))
            .collect::<Vec<_>>()
            .join(", then "),
    }
}

/// The workers a running build's jobs are on, by job: a line for its header (its jobs
/// have no rows until they are recorded).
pub fn running_on(attempts: &std::collections::BTreeMap<String, Vec<String>>) -> String {
    if attempts.is_empty() {
        return String::new();
    }
    let jobs: Vec<String> = attempts
        .iter()
        .filter_map(|(n, ws)| Some(format!("job {n} on {}", on_workers(ws.last()?, ws))))
        .collect();
    format!(
        "<p id=\"workers\" class=\"muted\">{}</p>",
        esc(&jobs.join("; "))
    )
}

/// The build's links: its commit, what its push compares (or its pull request) on the
/// forge's web pages when the repository names them (`web_url`), and its raw log, to
/// read or to save.
pub fn links(r: &BuildRow, repo: Option<&crate::runway_toml::RepoConfig>) -> String {
    let q = crate::notify::url_component(&r.repo);
    let mut items = Vec::new();
    if let Some(web) = repo.and_then(|c| c.web_url.as_deref()) {
        let web = web.trim_end_matches('/');
        let forge = repo.map(|c| c.forge).unwrap_or_default();
        let shown = r
            .pull_request
            .as_ref()
            .map_or(r.commit.as_str(), |p| p.head_sha.as_str());
        items.push(format!(
            "<a id=\"commit-link\" href=\"{}\">commit {}</a>",
            esc(&format!("{web}/commit/{shown}")),
            esc(&shown[..shown.len().min(7)])
        ));
        if let Some(p) = &r.pull_request {
            let path = match forge {
                crate::forge::Forge::GitHub => "pull",
                crate::forge::Forge::Gitea => "pulls",
                crate::forge::Forge::GitLab => "-/merge_requests",
            };
            items.push(format!(
                "<a id=\"compare-link\" href=\"{}\">pull request #{}</a>",
                esc(&format!("{web}/{path}/{}", p.number)),
                p.number
            ));
        } else if !r.commit_range.is_empty() {
            let range = match forge {
                crate::forge::Forge::GitLab => format!("{web}/-/compare/{}", r.commit_range),
                _ => format!("{web}/compare/{}", r.commit_range),
            };
            items.push(format!(
                "<a id=\"compare-link\" href=\"{}\">compare</a>",
                esc(&range)
            ));
        }
    }
    items.push(format!(
        "<a id=\"view-config\" href=\"/builds/{n}/config?repo={q}\">view config</a>",
        n = r.number
    ));
    items.push(format!(
        "<a id=\"raw-log\" href=\"/api/builds/{n}/log?repo={q}\">raw log</a>",
        n = r.number
    ));
    items.push(format!(
        "<a id=\"download-log\" href=\"/api/builds/{n}/log?repo={q}&amp;download=1\" download>download</a>",
        n = r.number
    ));
    format!("<p class=\"links muted\">{}</p>", items.join(" · "))
}

/// The earlier attempts of a build's jobs that ran again, each with its log.
pub fn attempts(r: &BuildRow, all: &[crate::store::Attempt]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let q = crate::notify::url_component(&r.repo);
    let items: String = all
        .iter()
        .map(|a| {
            format!(
                "<li>Job {j}, attempt {n}: {badge} {why} <a href=\"/api/builds/{b}/log?repo={q}&amp;job={jq}&amp;attempt={n}\">log</a></li>",
                j = esc(&a.number),
                n = a.attempt,
                badge = badge(&a.result),
                why = esc(&a.reason),
                b = r.number,
                jq = crate::notify::url_component(&a.number),
            )
        })
        .collect();
    format!("<section id=\"attempts\"><h3>Earlier attempts</h3><ul>{items}</ul></section>")
}

/// What "View config" shows of a build.
pub struct ConfigView {
    /// Where the text came from (`.travis.yml`, or with an API request's config).
    pub name: String,
    /// The config as read, settings masked.
    pub text: String,
    /// What was said of it (errors, warnings, notes), each at its line and column.
    pub said: Vec<String>,
    /// The decisions with their reasons, as `runway plan` says them.
    pub decisions: String,
    /// The commit it was read at.
    pub commit: String,
}

/// A build's "View config" page, or why the config cannot be shown.
pub fn config(r: &BuildRow, view: &Result<ConfigView, String>) -> String {
    let back = crate::notify::build_url("", &r.repo, r.number);
    let mut b = format!(
        "<h1><a href=\"{}\">{} #{}</a>: config</h1>",
        esc(&back),
        esc(&r.repo),
        r.number
    );
    match view {
        Err(why) => b.push_str(&format!(
            "<p class=\"why\" id=\"config-error\">The config cannot be read now: {}</p>",
            esc(why)
        )),
        Ok(v) => {
            b.push_str(&format!(
                "<p class=\"muted\">{} at <code>{}</code>, as the build read it.</p>",
                esc(&v.name),
                esc(&v.commit[..v.commit.len().min(12)])
            ));
            b.push_str("<h2>Decisions</h2>");
            b.push_str(&format!(
                "<pre id=\"decisions\">{}</pre>",
                esc(&v.decisions)
            ));
            if !v.said.is_empty() {
                b.push_str("<h2>What runway said of it</h2><ul id=\"said\">");
                for s in &v.said {
                    b.push_str(&format!("<li><code>{}</code></li>", esc(s)));
                }
                b.push_str("</ul>");
            }
            b.push_str(&format!(
                "<h2>{}</h2><pre id=\"config-text\">",
                esc(&v.name)
            ));
            for (i, line) in v.text.lines().enumerate() {
                b.push_str(&format!(
                    "<span id=\"C{n}\"><span class=\"muted\">{n:>4}</span>  {}</span>\n",
                    esc(line),
                    n = i + 1
                ));
            }
            b.push_str("</pre>");
        }
    }
    page(&format!("{} #{} config", r.repo, r.number), "", &b)
}

/// What became of a build's commit statuses on the forge: one line each, a failure
/// with its reason.
pub fn statuses(all: &[crate::store::StatusView]) -> String {
    if all.is_empty() {
        return String::new();
    }
    let items: String = all
        .iter()
        .map(|s| {
            let what = match s.outcome.as_str() {
                "posted" => "posted".to_string(),
                "pending" if s.attempts == 0 => "posting".to_string(),
                "pending" => format!("not posted yet ({} tries): {}", s.attempts, s.last_error),
                "failed" => format!("not posted ({} tries): {}", s.attempts, s.last_error),
                other => other.to_string(),
            };
            format!(
                "<li><code>{}</code> {} on <code>{}</code>: {}</li>",
                esc(&s.context),
                esc(&s.state),
                esc(&s.sha[..s.sha.len().min(7)]),
                esc(&what)
            )
        })
        .collect();
    format!("<details id=\"statuses\"><summary>Commit statuses</summary><ul>{items}</ul></details>")
}

/// A build page: the header, the jobs by stage, then a log with a tab for the whole
/// build and one per job. With `live`, the logs come from `/builds/N/events` as they
/// grow. `#job=1.2` opens a job's tab; `#L12` a line.
pub fn build(
    r: &BuildRow,
    jobs: &[JobRow],
    log: &[u8],
    live: bool,
    can_change: bool,
    on: &str,
) -> String {
    let mut b = header(r, jobs, can_change);
    b.push_str(on);
    if !jobs.is_empty() {
        b.push_str(&jobs_html(jobs));
    }
    let stored: serde_json::Map<String, serde_json::Value> = jobs
        .iter()
        .map(|j| {
            let v = serde_json::json!({"text": String::from_utf8_lossy(&j.log), "result": j.result, "times": j.times});
            (j.number.clone(), v)
        })
        .collect();
    // An ended build's log is its jobs' logs one after another: the page puts them
    // together rather than carrying them twice.
    let whole = !jobs.is_empty() && log.len() == jobs.iter().map(|j| j.log.len()).sum::<usize>();
    let data = serde_json::json!({
        "log": if whole { serde_json::Value::Null } else { String::from_utf8_lossy(log).into() },
        "jobs": stored,
        "live": live,
        "n": r.number,
        "repo": r.repo,
    });
    b.push_str(&format!(
        "<nav id=\"tabs\"></nav><div id=\"follow\"><button hidden></button> <button id=\"times-toggle\" type=\"button\">Show times</button></div><div id=\"log\" class=\"log\"></div>\
         <script id=\"data\" type=\"application/json\">{}</script>",
        script_json(&data)
    ));
    page(
        &format!("{} #{} {}", r.repo, r.number, r.state.as_str()),
        "data-page=\"build\"",
        &b,
    )
}

#[cfg(test)]
mod tests {
    /// issue 14: the build page says why in its header, with the failing command.
    #[test]
    fn a_failed_builds_header_names_the_failing_command_and_job() {
        let row = BuildRow {
            number: 4,
            repo: "o/app".into(),
            state: crate::store::Status::Failed,
            ..BuildRow::default()
        };
        let mut job = JobRow::passed_for_tests();
        job.number = "4.1".into();
        job.result = "failed".into();
        job.reason = "`test -f coverage.xml` exited 1".into();
        let page = build(&row, &[job], b"", false, false, "");
        assert!(
            page.contains(
                "failed</span>: `test -f coverage.xml` exited 1 in <a href=\"#job=4.1\">job 4.1</a>"
            ),
            "{page}"
        );
    }

    use super::*;

    /// issue 14: past a page of builds the list links to the older ones, after the
    /// last shown (keyset), and back to the newest.
    #[test]
    fn the_list_links_to_older_builds_after_the_last_shown() {
        let rows: Vec<BuildRow> = (0..=PAGE as i64)
            .map(|i| BuildRow {
                id: 1000 - i,
                number: (1000 - i) as u64,
                repo: "o/app".into(),
                commit: "abcdef0".into(),
                ..BuildRow::default()
            })
            .collect();
        let repos = ["o/app".to_string()];
        let list = |before| {
            index(&List {
                branch: None,
                branches: &[],
                rows: &rows,
                latest: &rows[..1],
                repos: &repos,
                only: Some("o/app"),
                before,
                seen: "",
            })
        };
        let html = list(None);
        assert_eq!(html.matches("<tr data-id=").count(), PAGE, "{html}");
        let last = 1000 - (PAGE as i64 - 1);
        assert!(
            html.contains(&format!(
                "href=\"/?repo=o%2Fapp&amp;before={last}\" id=\"older\""
            )),
            "{html}"
        );
        assert!(!html.contains("Newest builds"));
        assert!(list(Some(2000)).contains("<a href=\"/?repo=o%2Fapp\">Newest builds</a>"));
    }

    /// issue 14: the build page says what each deploy did and what became of the mail.
    #[test]
    fn the_build_page_shows_deploys_by_stage_and_the_mail() {
        let row = BuildRow {
            number: 7,
            repo: "o/app".into(),
            state: crate::store::Status::Passed,
            mail: "sent to dev@example.com".into(),
            ..BuildRow::default()
        };
        let mut test = JobRow::passed_for_tests();
        test.number = "7.1".into();
        let mut ship = JobRow::passed_for_tests();
        ship.number = "7.2".into();
        ship.stage = "deploy".into();
        ship.deploys = vec!["s3: skipped (this branch is not permitted: dev)".into()];
        let page = build(&row, &[test, ship], b"", false, false, "");
        assert!(page.contains("<h3>Stage: test</h3>"), "{page}");
        assert!(page.contains("<h3>Stage: deploy</h3>"), "{page}");
        assert!(
            page.contains("<li>s3: skipped (this branch is not permitted: dev)</li>"),
            "{page}"
        );
        assert!(page.contains("mail: sent to dev@example.com"), "{page}");
    }

    #[test]
    fn embedded_data_cannot_end_or_change_the_script() {
        let v = serde_json::json!("<!--<script></script>&");
        let text = script_json(&v);
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "<!--<script></script>&"
        );
        let row = BuildRow {
            number: 1,
            repo: "o/app".into(),
            state: crate::store::Status::Passed,
            ..BuildRow::default()
        };
        let page = build(&row, &[], b"<!--<script>", false, false, "");
        let open = "<script id=\"data\" type=\"application/json\">";
        let script = &page[page.find(open).unwrap() + open.len()..];
        let script = &script[..script.find("</script>").unwrap()];
        assert!(
            !script.contains("<!--") && !script.contains('<'),
            "{script}"
        );
        // Nothing but the data's own closing tag ends it.
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
    }

    #[test]
    fn links_name_the_repository_url_encoded() {
        let row = BuildRow {
            number: 3,
            repo: "o/a b&c".into(),
            state: crate::store::Status::Passed,
            commit: "abcdef0123".into(),
            ..BuildRow::default()
        };
        let repos = ["o/a b&c".to_string()];
        let html = index(&List {
            branch: None,
            branches: &[],
            rows: std::slice::from_ref(&row),
            latest: &[],
            repos: &repos,
            only: None,
            before: None,
            seen: "",
        });
        assert!(
            html.contains("href=\"/builds/3?repo=o/a%20b%26c\""),
            "{html}"
        );
        assert!(html.contains("href=\"/?repo=o%2Fa%20b%26c\""), "{html}");
    }

    /// issue 14: the list shows each build's commit line, event and start (UTC).
    #[test]
    fn the_list_shows_the_commit_line_the_event_and_when_it_started() {
        assert_eq!(crate::clock::utc(0), "1970-01-01T00:00:00Z");
        // date -u -d @1796138438
        assert_eq!(crate::clock::utc(1_796_138_438), "2026-12-01T15:20:38Z");
        assert_eq!(crate::clock::utc(951_782_400), "2000-02-29T00:00:00Z");
        let row = BuildRow {
            number: 4,
            repo: "o/app".into(),
            event: "push".into(),
            message: "Fix the <login> page\n\nlong body".into(),
            author: "Ada".into(),
            started_at: 1_796_138_438,
            state: crate::store::Status::Passed,
            commit: "abcdef0123".into(),
            ..BuildRow::default()
        };
        let repos = ["o/app".to_string()];
        let html = index(&List {
            branch: None,
            branches: &[],
            rows: std::slice::from_ref(&row),
            latest: &[],
            repos: &repos,
            only: Some("o/app"),
            before: None,
            seen: "",
        });
        assert!(
            html.contains("<code>abcdef0</code> Fix the &lt;login&gt; page</td>"),
            "{html}"
        );
        assert!(!html.contains("long body"), "{html}");
        assert!(
            html.contains("<td class=\"hide-narrow\">push</td>"),
            "{html}"
        );
        assert!(
            html.contains("<td class=\"hide-narrow\">Ada</td>"),
            "{html}"
        );
        assert!(html.contains("datetime=\"2026-12-01T15:20:38Z\""), "{html}");
        assert!(html.contains("class=\"on\">o/app</a>"), "{html}");
    }

    /// Issue 30: a retried job names every worker that took it; a running build's page
    /// names the workers its jobs are on; a queued build says when it was queued.
    #[test]
    fn workers_of_every_attempt_and_a_queued_time() {
        let mut attempts = std::collections::BTreeMap::new();
        attempts.insert(
            "3.1".to_string(),
            vec!["frozen".to_string(), "thawed".to_string()],
        );
        let line = running_on(&attempts);
        assert!(
            line.contains("job 3.1 on frozen (attempt 1), then thawed (attempt 2)"),
            "{line}"
        );
        assert_eq!(on_workers("w", &["w".to_string()]), "w");
        let row = BuildRow {
            state: crate::store::Status::Queued,
            commit: "abcdef1234".into(),
            ..BuildRow::default()
        };
        let page = build(&row, &[], b"", true, false, "");
        assert!(page.contains("<span>queued "), "{page}");
        assert!(!page.contains("<span>started "), "{page}");
    }

    /// Issue 28 (7): a running build's header said "took running"; it says its state,
    /// and an ended one how long it took.
    #[test]
    fn a_running_build_has_not_taken_anything_yet() {
        let row = BuildRow {
            state: crate::store::Status::Running,
            commit: "abcdef1234".into(),
            started_at: 100,
            ..BuildRow::default()
        };
        let page = build(&row, &[], b"", true, false, "");
        assert!(!page.contains("took running"), "{page}");
        assert!(page.contains("<span>running</span>"), "{page}");
        let ended = BuildRow {
            state: crate::store::Status::Passed,
            finished_at: Some(142),
            ..row
        };
        let page = build(&ended, &[], b"", false, false, "");
        assert!(page.contains("<span>took 42s</span>"), "{page}");
    }
}
