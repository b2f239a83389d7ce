//! The server's HTML: the builds list and a build page whose log follows the build
//! live (server-sent events), with Travis's folds shown as collapsible sections.

use crate::store::{BuildRow, JobRow};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}\
.passed{color:#2e7d32}.failed,.errored{color:#c62828}.canceled{color:#777}.running,.queued{color:#f9a825}\
pre{background:#111;color:#eee;padding:1em;white-space:pre-wrap}#tabs{margin:1em 0}#tabs a{margin-right:1em}details>summary{cursor:pointer;color:#8ab4f8}#repos a.on{font-weight:bold}</style>";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title>{STYLE}</head><body>{body}</body></html>",
        esc(title)
    )
}

fn took(r: &BuildRow) -> String {
    r.finished_at
        .map(|f| format!("{}s", f - r.started_at))
        .unwrap_or_else(|| "-".into())
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

/// The builds list, newest first: the commit's first line, branch or tag, event, when
/// it started (UTC; relative in the browser, exact on hover), duration and state, and a
/// filter by repository (`/?repo=owner/app`).
pub fn index(rows: &[BuildRow], repos: &[String], only: Option<&str>) -> String {
    let mut b = String::from("<h1>runway</h1><nav id=\"repos\">");
    let link = |label: &str, href: &str, on: bool| {
        format!(
            "<a href=\"{}\"{}>{}</a> ",
            esc(href),
            if on { " class=\"on\"" } else { "" },
            esc(label)
        )
    };
    b.push_str(&link("all repositories", "/", only.is_none()));
    for r in repos {
        let href = format!("/?repo={}", crate::notify::url_component(r));
        b.push_str(&link(r, &href, only == Some(r.as_str())));
    }
    b.push_str(
        "</nav><table id=\"builds\"><tr><th>#</th><th>Repository</th><th>Commit</th><th>Author</th><th>Branch</th><th>Event</th><th>Started</th><th>Duration</th><th>State</th></tr>",
    );
    for r in rows {
        let what = r
            .tag
            .as_deref()
            .map(|t| format!("tag {t}"))
            .or(r.branch.clone())
            .unwrap_or_default();
        let first_line = r.message.lines().next().unwrap_or("");
        b.push_str(&format!(
            "<tr><td><a href=\"{href}\">#{n}</a></td><td>{repo}</td><td><code>{sha}</code> {msg}</td><td>{author}</td><td>{what}</td><td>{event}</td><td><time datetime=\"{iso}\" title=\"{iso}\">{iso}</time></td><td>{took}</td><td class=\"{st}\">{st}</td></tr>",
            n = r.number,
            href = esc(&crate::notify::build_url("", &r.repo, r.number)),
            repo = esc(&r.repo),
            sha = esc(&r.commit[..r.commit.len().min(7)]),
            msg = esc(first_line),
            author = esc(&r.author),
            what = esc(&what),
            event = esc(&r.event),
            iso = utc(r.started_at),
            st = r.state.as_str(),
            took = took(r),
        ));
    }
    b.push_str(
        "</table><script>\n\
         for (const t of document.querySelectorAll('time')) {\n\
           const s = Math.round((Date.now() - Date.parse(t.dateTime)) / 1000);\n\
           t.textContent = s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : s < 86400 ? Math.round(s / 3600) + ' h ago' : t.dateTime.slice(0, 10);\n\
         }\n\
         setTimeout(() => location.reload(), 5000);\n\
         </script>",
    );
    page("runway builds", &b)
}

/// Seconds since the epoch as `2026-12-01T16:20:38Z`.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A missing build.
pub fn not_found(n: u64) -> String {
    page(
        "not found",
        &format!("<h1>There is no build #{n}</h1><p><a href=\"/\">All builds</a></p>"),
    )
}

/// A build page: the jobs, then a log with a tab for the whole build and one per job.
/// With `live`, the logs come from `/builds/N/events` as they grow: the build's as
/// `message` events, each job's as `job` events (a job running beside another is live
/// in its own tab while the build's log holds it back). `#job=1.2` opens a job's tab.
pub fn build(r: &BuildRow, jobs: &[JobRow], log: &[u8], live: bool) -> String {
    let mut b = format!(
        "<p><a href=\"/\">All builds</a></p><h1>Build #{} <span id=\"state\" class=\"{st}\">{st}</span></h1><p>{} &middot; {} &middot; <code>{}</code></p>",
        r.number,
        esc(&r.repo),
        esc(r.tag.as_deref().or(r.branch.as_deref()).unwrap_or("")),
        esc(&r.commit),
        st = r.state.as_str(),
    );
    if let Some(reason) = &r.reason {
        b.push_str(&format!("<p>{}</p>", esc(reason)));
    } else if let Some(j) = jobs
        .iter()
        .find(|j| j.result == r.state.as_str() && !j.reason.is_empty())
    {
        // Why in the header: the first job that ended as the build did.
        b.push_str(&format!(
            "<p id=\"why\"><span class=\"{st}\">{st}</span>: {} in <a href=\"#job={n}\">job {n}</a></p>",
            esc(&j.reason),
            st = r.state.as_str(),
            n = esc(&j.number),
        ));
    }
    if !jobs.is_empty() {
        b.push_str(
            "<table><tr><th>Job</th><th>Matrix and env</th><th>Result</th><th>Duration</th><th>Why</th></tr>",
        );
        for j in jobs {
            b.push_str(&format!(
                "<tr><td><a href=\"#job={n}\">{n}</a></td><td><code>{}</code></td><td class=\"{r}\">{r}</td><td>{:.1}s</td><td>{}</td></tr>",
                esc(&j.env),
                j.duration_ms as f64 / 1000.0,
                esc(&j.reason),
                n = esc(&j.number),
                r = esc(&j.result)
            ));
        }
        b.push_str("</table>");
    }
    let stored: serde_json::Map<String, serde_json::Value> = jobs
        .iter()
        .map(|j| {
            let v =
                serde_json::json!({"text": String::from_utf8_lossy(&j.log), "result": j.result});
            (j.number.clone(), v)
        })
        .collect();
    let json = |v: &serde_json::Value| script_json(v);
    b.push_str(&format!(
        "<nav id=\"tabs\"></nav><div id=\"log\"></div><script>\n\
         const texts = {{'': {build}}};\n\
         const results = {{}};\n\
         const order = [];\n\
         for (const [n, j] of Object.entries({jobs})) {{ order.push(n); texts[n] = j.text; results[n] = j.result; }}\n\
         const chosen = () => {{ const m = location.hash.match(/^#job=(.+)$/); return m ? decodeURIComponent(m[1]) : ''; }};\n\
         function tabs() {{\n\
           const nav = document.getElementById('tabs');\n\
           nav.innerHTML = '';\n\
           for (const n of [''].concat(order)) {{\n\
             const a = document.createElement('a');\n\
             a.href = n ? '#job=' + n : '#';\n\
             a.textContent = n ? 'Job ' + n + (results[n] ? ' (' + results[n] + ')' : ' (running)') : 'Build log';\n\
             if (n) a.className = results[n] || 'running';\n\
             if (n === chosen()) a.style.fontWeight = 'bold';\n\
             nav.appendChild(a);\n\
             nav.appendChild(document.createTextNode(' '));\n\
           }}\n\
         }}\n\
         function render() {{\n\
           tabs();\n\
           const root = document.getElementById('log');\n\
           root.innerHTML = '';\n\
           const stack = [document.createElement('pre')];\n\
           root.appendChild(stack[0]);\n\
           for (const line of (texts[chosen()] || '').replace(/\\r/g, '').split('\\n')) {{\n\
             let m = line.match(/^travis_fold:start:(.*)$/);\n\
             if (m) {{ const d = document.createElement('details'); const s = document.createElement('summary'); s.textContent = m[1]; d.appendChild(s); const p = document.createElement('pre'); d.appendChild(p); stack[stack.length-1].appendChild(d); stack.push(p); continue; }}\n\
             if (/^travis_fold:end:/.test(line)) {{ if (stack.length > 1) stack.pop(); continue; }}\n\
             if (/^travis_time:/.test(line)) continue;\n\
             stack[stack.length-1].appendChild(document.createTextNode(line + '\\n'));\n\
           }}\n\
         }}\n\
         let pending = false;\n\
         function later() {{ if (!pending) {{ pending = true; setTimeout(() => {{ pending = false; render(); }}, 50); }} }}\n\
         window.addEventListener('hashchange', render);\n\
         render();\n\
         if ({live}) {{\n\
           texts[''] = '';\n\
           const es = new EventSource('/builds/{n}/events?repo=' + encodeURIComponent({repo}));\n\
           es.onmessage = (e) => {{ texts[''] += JSON.parse(e.data); later(); }};\n\
           es.addEventListener('job', (e) => {{ const d = JSON.parse(e.data); if (!(d.job in texts)) {{ order.push(d.job); texts[d.job] = ''; }} texts[d.job] += d.text; later(); }});\n\
           es.addEventListener('jobend', (e) => {{ const d = JSON.parse(e.data); if (!(d.job in texts)) {{ order.push(d.job); texts[d.job] = ''; }} results[d.job] = d.result; later(); }});\n\
           es.addEventListener('end', () => {{ es.close(); setTimeout(() => location.reload(), 500); }});\n\
         }}\n\
         </script>",
        build = json(&serde_json::Value::String(String::from_utf8_lossy(log).into_owned())),
        jobs = json(&serde_json::Value::Object(stored)),
        live = live,
        n = r.number,
        repo = json(&serde_json::Value::String(r.repo.clone())),
    ));
    page(&format!("build #{}", r.number), &b)
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
        let page = build(&row, &[job], b"", false);
        assert!(
            page.contains(
                "failed</span>: `test -f coverage.xml` exited 1 in <a href=\"#job=4.1\">job 4.1</a>"
            ),
            "{page}"
        );
    }

    use super::*;

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
        let page = build(&row, &[], b"<!--<script>", false);
        let script = &page[page.find("<script>").unwrap() + 8..];
        assert!(!script[..script.find("</script>").unwrap()].contains("<!--"));
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
        let html = index(&[row], &["o/a b&c".into()], None);
        assert!(
            html.contains("href=\"/builds/3?repo=o/a%20b%26c\""),
            "{html}"
        );
        assert!(html.contains("href=\"/?repo=o%2Fa%20b%26c\""), "{html}");
    }

    /// issue 14: the list shows each build's commit line, event and start (UTC).
    #[test]
    fn the_list_shows_the_commit_line_the_event_and_when_it_started() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        // date -u -d @1796138438
        assert_eq!(utc(1_796_138_438), "2026-12-01T15:20:38Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
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
        let html = index(&[row], &["o/app".into()], Some("o/app"));
        assert!(
            html.contains("<code>abcdef0</code> Fix the &lt;login&gt; page</td>"),
            "{html}"
        );
        assert!(!html.contains("long body"), "{html}");
        assert!(html.contains("<td>push</td>"), "{html}");
        assert!(html.contains("<td>Ada</td>"), "{html}");
        assert!(html.contains("datetime=\"2026-12-01T15:20:38Z\""), "{html}");
        assert!(html.contains("class=\"on\">o/app</a>"), "{html}");
    }
}
