// Drives Debian's chromium with Playwright (playwright-core from the npm registry, at
// $RUNWAY_TEST_PLAYWRIGHT) for the browser tests: one JSON command per line on stdin,
// one JSON answer per line on stdout ({"ok": true, "value": …} or {"ok": false,
// "error": "…"}). The tests (tests/it/browser.rs) decide what to do and what to expect.
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.RUNWAY_TEST_PLAYWRIGHT);

const browser = await chromium.launch({
  executablePath: process.env.RUNWAY_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
// Nothing leaves the machine: a page asking for another host (a provider's web fonts)
// is answered at once with a failure instead of waiting on a network there is not.
await context.route((url) => !["127.0.0.1", "localhost"].includes(url.hostname), (r) => r.abort());
const page = await context.newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
// What the next prompt() is answered with (null: dismissed).
let answer = null;
page.on("dialog", (d) => (answer === null ? d.dismiss() : d.accept(answer)));

const ops = {
  goto: async (c) => { await page.goto(c.url, { waitUntil: "domcontentloaded" }); return page.url(); },
  // Waits until `js` (an expression) is truthy in the page; returns its value.
  until: async (c) => {
    const h = await page.waitForFunction(c.js, null, { timeout: c.timeout ?? 60000, polling: "raf" });
    return h.jsonValue();
  },
  eval: async (c) => page.evaluate(c.js),
  click: async (c) => { await page.click(c.selector, { timeout: c.timeout ?? 30000 }); return true; },
  wheel: async (c) => { await page.mouse.move(600, 400); await page.mouse.wheel(0, c.dy); return true; },
  answer: async (c) => { answer = c.value; return true; },
  viewport: async (c) => { await page.setViewportSize({ width: c.width, height: c.height }); return true; },
  scheme: async (c) => { await page.emulateMedia({ colorScheme: c.value }); return true; },
  screenshot: async (c) => { await page.screenshot({ path: c.path, fullPage: !!c.full }); return c.path; },
  errors: async () => errors,
  fill: async (c) => { await page.fill(c.selector, c.value, { timeout: c.timeout ?? 30000 }); return true; },
  url: async () => page.url(),
  loaded: async () => { await page.waitForLoadState("load"); return page.url(); },
  // Waits until the page is at a URL starting with `prefix` (through redirects).
  waitUrl: async (c) => { await page.waitForURL((u) => u.href.startsWith(c.prefix), { timeout: c.timeout ?? 60000, waitUntil: "domcontentloaded" }); return page.url(); },
  cookies: async () => context.cookies(),
  addCookies: async (c) => { await context.addCookies(c.cookies); return true; },
  clearCookies: async () => { await context.clearCookies(); return true; },
  close: async () => { await browser.close(); process.exit(0); },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let c;
  try {
    c = JSON.parse(line);
    const value = await ops[c.op](c);
    process.stdout.write(JSON.stringify({ ok: true, value: value ?? null }) + "\n");
  } catch (e) {
    process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.message || e) }) + "\n");
  }
}
await browser.close();
