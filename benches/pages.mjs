// Times pages in Debian's chromium through Playwright, for benches/pages.rs:
//   node pages.mjs ROUNDS "URL|READY_JS" ...
// For each URL, each round: a fresh page opens it and waits until READY_JS (an
// expression) is truthy; the time from navigation to then, in milliseconds. Prints
// {"URL": [ms, ...], ...} as JSON.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.RUNWAY_TEST_PLAYWRIGHT);
const [rounds, ...targets] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.RUNWAY_TEST_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const out = {};
for (const t of targets) out[t.slice(0, t.indexOf("|"))] = [];
for (let r = 0; r < Number(rounds); r++) {
  // The targets take turns within a round, so both see the same machine.
  for (const t of targets) {
    const at = t.indexOf("|");
    const [url, ready] = [t.slice(0, at), t.slice(at + 1)];
    const page = await browser.newPage();
    const start = Date.now();
    await page.goto(url, { waitUntil: "commit" });
    await page.waitForFunction(ready, null, { timeout: 120000, polling: "raf" });
    out[url].push(Date.now() - start);
    await page.close();
  }
}
await browser.close();
console.log(JSON.stringify(out));
