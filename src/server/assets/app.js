// runway's pages: the builds list kept up to date over /events, and the build page's
// log (ANSI colours through ansi_up, line numbers with links, Travis's folds titled by
// their command with their duration, the failing command marked, the tail followed).
import { AnsiUp } from "/assets/ansi_up.js";

const page = document.body.dataset.page;

// Relative times, exact on hover.
function ago(t) {
  const s = Math.round((Date.now() - Date.parse(t.dateTime)) / 1000);
  t.textContent = s < 45 ? "just now" : s < 3600 ? Math.round(s / 60) + " min ago"
    : s < 86400 ? Math.round(s / 3600) + " h ago" : t.dateTime.slice(0, 10);
  t.title = t.dateTime.replace("T", " ").replace("Z", " UTC");
}
function times(root) { for (const t of root.querySelectorAll("time")) ago(t); }
times(document);
setInterval(() => times(document), 30000);


// ------------------------------------------------------------------ the builds list

function index() {
  const only = document.body.dataset.repo || "";
  const onBranch = document.body.dataset.branch || "";
  const firstPage = document.body.dataset.first === "true";
  const tbody = document.querySelector("#builds tbody");
  // From the changes the page was read after: none between its reading and now is
  // missed.
  const seen = document.body.dataset.seen || "";
  const es = new EventSource("/events" + (seen ? "?after=" + encodeURIComponent(seen) : ""));
  es.addEventListener("build", (e) => {
    const b = JSON.parse(e.data);
    const tmp = document.createElement("tbody");
    tmp.innerHTML = b.row_html;
    const row = tmp.firstElementChild;
    const old = tbody.querySelector(`tr[data-id="${b.id}"]`);
    if (old) {
      old.replaceWith(row);
    } else if (firstPage && (!only || only === b.repo) && (!onBranch || onBranch === b.branch)) {
      row.classList.add("new");
      tbody.prepend(row);
      document.getElementById("empty")?.remove();
    }
    times(row);
    const repos = document.querySelector("ul.repos");
    if (repos) {
      const li = document.createElement("ul");
      li.innerHTML = b.repo_html;
      const item = li.firstElementChild;
      const had = repos.querySelector(`li[data-repo="${CSS.escape(b.repo)}"]`);
      const latest = !had || Number(had.dataset.id) <= b.id;
      if (had && latest) had.replaceWith(item);
      else if (!had) repos.append(item);
      times(item);
    }
  });
  es.addEventListener("reload", () => location.reload());
}

// ------------------------------------------------------------------ the build page

function build() {
  const data = JSON.parse(document.getElementById("data").textContent);
  actions(data);
  const texts = {};
  const results = {};
  const times = {};
  const order = [];
  for (const [n, j] of Object.entries(data.jobs)) {
    order.push(n); texts[n] = j.text; results[n] = j.result; times[n] = j.times || [];
  }
  // An ended build's log is its jobs' logs one after another (sent once), and so are
  // their line times.
  texts[""] = data.log ?? order.map((n) => texts[n]).join("");
  if (data.log == null) times[""] = order.flatMap((n) => times[n]);
  const chosen = () => {
    const m = location.hash.match(/^#job=(.+)$/);
    if (m) return decodeURIComponent(m[1]);
    const kept = sessionStorage.getItem("tab:" + location.pathname);
    if (kept !== null) return kept;
    // An ended build opens at the job its header names (the one it ended by), not at
    // the first failure of the whole log, which may be another job's.
    const named = !data.live && document.querySelector("#why a[href^='#job=']");
    return named ? decodeURIComponent(named.getAttribute("href").slice(5)) : "";
  };
  let view = null;
  let shown = null;
  function tabs() {
    const nav = document.getElementById("tabs");
    nav.innerHTML = "";
    for (const n of [""].concat(order)) {
      const a = document.createElement("a");
      a.href = n ? "#job=" + encodeURIComponent(n) : "#job=";
      a.textContent = n ? "Job " + n : "Build log";
      const r = n ? (results[n] || "running") : "";
      if (r) { const s = document.createElement("span"); s.className = r; s.textContent = " " + r; a.append(s); }
      if (n === shown) a.className = "on";
      nav.append(a);
    }
  }
  function show(tab) {
    // A live build's job may not have written yet: its tab waits for it.
    shown = tab in texts || data.live ? tab : "";
    if (!(shown in texts)) { order.push(shown); texts[shown] = ""; }
    const root = document.getElementById("log");
    view = new LogView(root, data.live, times[shown]);
    view.append(texts[shown] || "");
    if (!data.live) view.finish();
    tabs();
    // Opened at a line (#L12), at the failing command, or (live) at the tail.
    const line = location.hash.match(/^#L(\d+)$/);
    if (line) view.reveal(line[1]);
    else if (view.failing && !data.live) view.reveal(view.failing);
    else if (data.live) view.tail();
  }
  window.addEventListener("hashchange", () => {
    const m = location.hash.match(/^#job=(.*)$/);
    if (m) {
      sessionStorage.setItem("tab:" + location.pathname, decodeURIComponent(m[1]));
      show(decodeURIComponent(m[1]));
    } else if (/^#L\d+$/.test(location.hash)) {
      view.reveal(location.hash.slice(2));
    }
  });
  show(chosen());
  if (!data.live) return;
  const es = new EventSource(`/builds/${data.n}/events?repo=${encodeURIComponent(data.repo)}`);
  texts[""] = "";
  view.reset();
  const add = (tab, text) => {
    if (!(tab in texts)) { order.push(tab); texts[tab] = ""; tabs(); }
    texts[tab] += text;
    if (tab === shown) view.append(text);
  };
  es.onmessage = (e) => add("", JSON.parse(e.data));
  es.addEventListener("job", (e) => { const d = JSON.parse(e.data); add(d.job, d.text); });
  es.addEventListener("jobend", (e) => {
    const d = JSON.parse(e.data);
    if (!(d.job in texts)) { order.push(d.job); texts[d.job] = ""; }
    results[d.job] = d.result;
    tabs();
  });
  es.addEventListener("end", () => { es.close(); view.finish(); setTimeout(() => location.reload(), 600); });
}

// Cancel and restart: with sign-in, as the signed-in person (the session's cookie and
// the page's CSRF token); without, for whoever holds the API token (asked once, kept in
// this browser).
function actions(data) {
  const box = document.querySelector(".actions");
  if (!box) return;
  const said = box.querySelector(".said");
  const csrf = document.querySelector('meta[name="csrf-token"]');
  for (const button of box.querySelectorAll("button[data-act]")) {
    button.addEventListener("click", async () => {
      let headers;
      let token = null;
      if (csrf) {
        headers = { "X-CSRF-Token": csrf.content };
      } else {
        token = localStorage.getItem("runway-token");
        if (!token) {
          token = prompt("The server's API token (api_token_env in runway.toml):");
          if (!token) return;
        }
        headers = { Authorization: "Bearer " + token };
      }
      const act = button.dataset.act;
      const r = await fetch(`/api/builds/${data.n}/${act}?repo=${encodeURIComponent(data.repo)}`,
        { method: "POST", headers, credentials: "same-origin" });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        if (token) localStorage.setItem("runway-token", token);
        said.textContent = { cancel: "Canceling…", approve: "Approved: queued." }[act] || "Restarted: queued again.";
        setTimeout(() => location.reload(), act === "cancel" ? 1500 : 600);
      } else {
        if (r.status === 401 && token) localStorage.removeItem("runway-token");
        said.textContent = `Refused (${r.status}): ${body.error || r.statusText}`;
      }
    });
  }
}

// A log rendered line by line as it arrives: each line a numbered row, each fold a
// <details> titled by its first command, with its duration.
class LogView {
  // `times`: when each line of the text was written (Unix ms), shown on demand; a live
  // log's lines get the time they arrive.
  constructor(root, live, times) {
    this.root = root;
    this.live = live;
    this.times = times && times.length ? times : null;
    this.reset();
    const toggle = document.getElementById("times-toggle");
    if (toggle) {
      const label = () => { toggle.textContent = root.classList.contains("times") ? "Hide times" : "Show times"; };
      toggle.onclick = () => { root.classList.toggle("times"); label(); };
      label();
    }
    this.following = live;
    const button = document.querySelector("#follow button");
    this.button = button;
    if (button) {
      button.hidden = !live;
      button.onclick = () => { this.following = !this.following; this.label(); if (this.following) this.tail(); };
    }
    this.label();
    // Following stops when the reader scrolls up (wheel, touch, keys, the scroll
    // bar), and starts again when they reach the bottom. The page's own scrolls to the
    // tail always end at the bottom.
    const stop = () => { if (this.live && this.following) { this.following = false; this.label(); } };
    window.onwheel = (e) => { if (e.deltaY < 0) stop(); };
    window.ontouchmove = stop;
    window.onkeydown = (e) => { if (["ArrowUp", "PageUp", "Home"].includes(e.key)) stop(); };
    // The page's own scrolls to the tail are told apart by a flag each one sets and
    // its scroll event takes, not by how soon the event comes (a loaded machine
    // delivers it late, and the reader's following stopped by itself).
    window.onscroll = () => {
      if (!this.live) return;
      if (this.ownScroll) { this.ownScroll = false; return; }
      const bottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 8;
      if (bottom && !this.following) { this.following = true; this.label(); }
      else if (!bottom) stop();
    };
  }
  reset() {
    this.root.innerHTML = "";
    this.stack = [{ el: this.root, fold: null }];
    this.n = 0;
    this.raw = 0;
    this.rest = "";
    this.html = "";
    this.ansi = new AnsiUp();
    this.ansi.use_classes = false;
    this.lastCmd = 0;
    this.failing = 0;
  }
  label() {
    if (this.button) this.button.textContent = this.following ? "Following the log ▾ (scroll up to stop)" : "Follow the log";
  }
  top() { return this.stack[this.stack.length - 1]; }
  flush() {
    if (this.html) { this.top().el.insertAdjacentHTML("beforeend", this.html); this.html = ""; }
  }
  append(text) {
    const lines = (this.rest + text).split("\n");
    this.rest = lines.pop();
    for (const l of lines) this.line(l);
    this.flush();
    if (this.following) this.tail();
  }
  finish() {
    if (this.rest) { this.line(this.rest); this.rest = ""; }
    this.flush();
  }
  line(raw) {
    // Every line of the text counts for its time, markers too.
    const at = this.times ? this.times[this.raw] : (this.live ? Date.now() : undefined);
    this.raw += 1;
    // A carriage return redraws the line (progress bars): its last state is kept.
    let line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const cr = line.lastIndexOf("\r");
    if (cr >= 0) line = line.slice(cr + 1);
    let m = line.match(/^travis_fold:start:(.*)$/);
    if (m) return this.open(m[1]);
    if (/^travis_fold:end:/.test(line)) return this.close();
    if (/^travis_time:start:/.test(line)) return;
    m = line.match(/^travis_time:end:[^:]*:.*duration=(\d+)/);
    if (m) return this.duration(Number(m[1]) / 1e9);
    this.n += 1;
    const plain = line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
    let cls = "l";
    if (plain.startsWith("$ ")) {
      cls += " cmd";
      this.lastCmd = this.n;
      const fold = this.top().fold;
      if (fold && !fold.titled) { fold.titled = true; this.flush(); fold.title.textContent = plain; }
    }
    const failed = plain.match(/^The command "[\s\S]*" (?:failed and )?exited with (\d+)/);
    const bad = failed && failed[1] !== "0";
    if (bad) cls += " fail";
    const t = at ? ` data-t="${new Date(at).toTimeString().slice(0, 8)}"` : "";
    this.html += `<div class="${cls}" id="L${this.n}"><a href="#L${this.n}">${this.n}</a><span${t}>${this.ansi.ansi_to_html(line) || " "}</span></div>`;
    if (bad) this.fail();
  }
  open(name) {
    this.flush();
    const d = document.createElement("details");
    d.className = "fold";
    d.dataset.fold = name;
    d.innerHTML = `<summary><span class="arrow"></span><span class="title"></span><span class="dur"></span></summary><div class="body"></div>`;
    const title = d.querySelector(".title");
    title.textContent = name;
    this.top().el.append(d);
    this.stack.push({ el: d.querySelector(".body"), fold: { d, title, titled: false, dur: d.querySelector(".dur") } });
  }
  close() {
    this.flush();
    if (this.stack.length > 1) this.stack.pop();
  }
  duration(secs) {
    const shown = secs < 60 ? secs.toFixed(2) + "s" : Math.floor(secs / 60) + "m" + Math.round(secs % 60) + "s";
    const fold = this.top().fold;
    this.flush();
    if (fold && !fold.timed) { fold.timed = true; fold.dur.textContent = shown; return; }
    const cmd = this.lastCmd && document.getElementById("L" + this.lastCmd);
    if (cmd && !cmd.querySelector(".dur")) {
      const s = document.createElement("span");
      s.className = "dur";
      s.textContent = shown;
      cmd.lastElementChild.prepend(s);
    }
  }
  // The command that failed is marked (and its folds opened) where it ran.
  fail() {
    this.flush();
    if (!this.failing) this.failing = this.lastCmd || this.n;
    const cmd = this.lastCmd && document.getElementById("L" + this.lastCmd);
    if (cmd) {
      cmd.classList.add("fail");
      for (let d = cmd.closest("details"); d; d = d.parentElement.closest("details")) {
        d.open = true;
        d.classList.add("failed");
      }
    }
  }
  reveal(n) {
    const el = document.getElementById("L" + n);
    if (!el) return;
    for (let d = el.closest("details"); d; d = d.parentElement.closest("details")) d.open = true;
    for (const h of document.querySelectorAll(".l.hl")) h.classList.remove("hl");
    el.classList.add("hl");
    this.following = false;
    this.label();
    el.scrollIntoView({ block: "center" });
  }
  tail() {
    const target = document.documentElement.scrollHeight - window.innerHeight;
    // Only a scroll that moves makes an event to take.
    if (Math.abs(window.scrollY - target) > 1) this.ownScroll = true;
    window.scrollTo(0, document.documentElement.scrollHeight);
  }
}

// Classes are not hoisted: the page starts once everything above is defined.
if (page === "index") index();
if (page === "build") build();
