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
pre{background:#111;color:#eee;padding:1em;white-space:pre-wrap}details>summary{cursor:pointer;color:#8ab4f8}</style>";

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

/// The builds list, newest first.
pub fn index(rows: &[BuildRow]) -> String {
    let mut b = String::from(
        "<h1>runway</h1><table id=\"builds\"><tr><th>#</th><th>Repository</th><th>Branch</th><th>Commit</th><th>State</th><th>Duration</th></tr>",
    );
    for r in rows {
        let what = r
            .tag
            .as_deref()
            .map(|t| format!("tag {t}"))
            .or(r.branch.clone())
            .unwrap_or_default();
        b.push_str(&format!(
            "<tr><td><a href=\"/builds/{n}?repo={repo}\">#{n}</a></td><td>{repo}</td><td>{what}</td><td><code>{sha}</code></td><td class=\"{st}\">{st}</td><td>{took}</td></tr>",
            n = r.number,
            repo = esc(&r.repo),
            what = esc(&what),
            sha = esc(&r.commit[..r.commit.len().min(7)]),
            st = esc(&r.state),
            took = took(r),
        ));
    }
    b.push_str("</table><script>setTimeout(()=>location.reload(),5000)</script>");
    page("runway builds", &b)
}

/// A missing build.
pub fn not_found(n: u64) -> String {
    page(
        "not found",
        &format!("<h1>There is no build #{n}</h1><p><a href=\"/\">All builds</a></p>"),
    )
}

/// A build page. With `live`, the log comes from `/builds/N/events` as it grows.
pub fn build(r: &BuildRow, jobs: &[JobRow], log: &[u8], live: bool) -> String {
    let mut b = format!(
        "<p><a href=\"/\">All builds</a></p><h1>Build #{} <span id=\"state\" class=\"{st}\">{st}</span></h1><p>{} &middot; {} &middot; <code>{}</code></p>",
        r.number,
        esc(&r.repo),
        esc(r.tag.as_deref().or(r.branch.as_deref()).unwrap_or("")),
        esc(&r.commit),
        st = esc(&r.state),
    );
    if let Some(reason) = &r.reason {
        b.push_str(&format!("<p>{}</p>", esc(reason)));
    }
    if !jobs.is_empty() {
        b.push_str("<table><tr><th>Job</th><th>Env</th><th>Result</th><th>Duration</th></tr>");
        for j in jobs {
            b.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"{r}\">{r}</td><td>{:.1}s</td></tr>",
                esc(&j.number),
                esc(&j.env),
                j.duration_ms as f64 / 1000.0,
                r = esc(&j.result)
            ));
        }
        b.push_str("</table>");
    }
    let stored = String::from_utf8_lossy(log);
    b.push_str(&format!(
        "<div id=\"log\"></div><script>\n\
         const raw = {stored};\n\
         let text = raw;\n\
         function render() {{\n\
           const root = document.getElementById('log');\n\
           root.innerHTML = '';\n\
           const stack = [document.createElement('pre')];\n\
           root.appendChild(stack[0]);\n\
           for (const line of text.replace(/\\r/g, '').split('\\n')) {{\n\
             let m = line.match(/^travis_fold:start:(.*)$/);\n\
             if (m) {{ const d = document.createElement('details'); const s = document.createElement('summary'); s.textContent = m[1]; d.appendChild(s); const p = document.createElement('pre'); d.appendChild(p); stack[stack.length-1].appendChild(d); stack.push(p); continue; }}\n\
             if (/^travis_fold:end:/.test(line)) {{ if (stack.length > 1) stack.pop(); continue; }}\n\
             if (/^travis_time:/.test(line)) continue;\n\
             stack[stack.length-1].appendChild(document.createTextNode(line + '\\n'));\n\
           }}\n\
         }}\n\
         render();\n\
         if ({live}) {{\n\
           text = '';\n\
           const es = new EventSource('/builds/{n}/events?repo={repo}');\n\
           es.onmessage = (e) => {{ text += JSON.parse(e.data); render(); }};\n\
           es.addEventListener('end', () => {{ es.close(); setTimeout(() => location.reload(), 500); }});\n\
         }}\n\
         </script>",
        stored = serde_json::to_string(&stored).unwrap_or_else(|_| "\"\"".into()),
        live = live,
        n = r.number,
        repo = esc(&r.repo),
    ));
    page(&format!("build #{}", r.number), &b)
}
