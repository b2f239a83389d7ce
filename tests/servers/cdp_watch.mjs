// Opens URL in headless Chromium (Debian's /usr/bin/chromium) through the DevTools
// protocol and reads the text of #log (and the whole body) at given moments, so a test
// can see a page change while it stays open.
// Usage: node --experimental-websocket cdp_watch.mjs URL MS1 MS2 ...  → JSON on stdout:
//   [{"ms":MS1,"log":"...","body":"..."}, ...]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, ...times] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "runway-cdp-"));
const chrome = spawn("/usr/bin/chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`, "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });

const wsUrl = await new Promise((resolve, reject) => {
  let err = "";
  chrome.stderr.on("data", (d) => {
    err += d;
    const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
    if (m) resolve(m[1]);
  });
  chrome.on("exit", () => reject(new Error("chromium exited: " + err)));
  setTimeout(() => reject(new Error("chromium did not start: " + err)), 20000);
});

const ws = new WebSocket(wsUrl);
await new Promise((r) => ws.addEventListener("open", r));
let id = 0;
const pending = new Map();
ws.addEventListener("message", (e) => {
  const msg = JSON.parse(e.data);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  }
});
const send = (method, params = {}, sessionId) =>
  new Promise((resolve) => {
    const m = { id: ++id, method, params };
    if (sessionId) m.sessionId = sessionId;
    pending.set(m.id, resolve);
    ws.send(JSON.stringify(m));
  });

const { result: { targetId } } = await send("Target.createTarget", { url });
const { result: { sessionId } } = await send("Target.attachToTarget", { targetId, flatten: true });
const start = Date.now();
const out = [];
for (const t of times.map(Number)) {
  const wait = start + t - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const read = async (expr) => (await send("Runtime.evaluate", { expression: expr, returnByValue: true }, sessionId)).result?.result?.value ?? "";
  out.push({
    ms: t,
    log: await read("(document.getElementById('log') || {innerText: ''}).innerText"),
    body: await read("document.body ? document.body.innerText : ''"),
  });
}
console.log(JSON.stringify(out));
ws.close();
chrome.kill("SIGKILL");
await new Promise((r) => chrome.once("exit", r));
try {
  rmSync(profile, { recursive: true, force: true });
} catch {
  // Chromium's helpers may still hold the profile; it is in the temp dir.
}
process.exit(0);
