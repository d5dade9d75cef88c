// The status page in Debian's headless Chromium: it lists the stations, and pressing play on one makes the
// audio element's currentTime advance. Given a title, it also waits until the player shows that title as one the
// stream carried (timed ID3), not as the now playing of /status.json. Prints one JSON line with what it saw; saves
// a screenshot.
// Usage: node play.mjs <page url> <screenshot.png> [slug] [title]
import { run } from "./chromium.mjs";

const [url, screenshot, slug = "demo-aac", title] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node play.mjs <page url> <screenshot.png> [slug] [title]");
  process.exit(2);
}

const TIMEOUT_MS = 45000;
const TITLE_TIMEOUT_MS = 90000; // the title's segment must be cut, tagged, listed and reached in playback

const errors = [];
try {
  await run({ viewport: { width: 1100, height: 560 } }, async (context) => {
    const page = context.pages()[0] || (await context.newPage());
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
    await page.goto(url, { timeout: TIMEOUT_MS });
    const button = page.locator(`button.play[data-slug="${slug}"]:not([disabled])`);
    await button.waitFor({ timeout: TIMEOUT_MS });
    const stations = await page.locator("#stations tr").evaluateAll((rows) => rows.map((row) => row.dataset.slug));
    const mseAac = await page.evaluate(() => window.MediaSource?.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'));
    await button.click();
    // currentTime must move forward, and keep moving: a first reading above zero, then a later, larger one.
    const first = await page.waitForFunction(() => document.getElementById("player").currentTime > 0.5,
      null, { timeout: TIMEOUT_MS, polling: 200 })
      .then(() => page.evaluate(() => document.getElementById("player").currentTime));
    await page.waitForFunction((t) => document.getElementById("player").currentTime > t + 1.5, first,
      { timeout: TIMEOUT_MS, polling: 200 });
    const second = await page.evaluate(() => document.getElementById("player").currentTime);
    if (title) {
      await page.waitForFunction((expected) => {
        const shown = document.getElementById("stream-title");
        return shown.dataset.source === "stream" && shown.textContent.includes(expected);
      }, title, { timeout: TITLE_TIMEOUT_MS, polling: 250 });
    }
    const state = await page.evaluate(() => ({
      paused: document.getElementById("player").paused,
      listening: document.getElementById("now-listening").textContent,
      streamTitle: document.getElementById("stream-title").textContent,
      titleSource: document.getElementById("stream-title").dataset.source,
      summary: document.getElementById("summary").textContent,
      pressed: document.querySelector("button.play[aria-pressed=true]")?.dataset.slug || null,
    }));
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(JSON.stringify({ stations, mseAac, currentTime: [first, second], ...state, errors }));
  });
} catch (error) {
  console.error(`play.mjs: ${error.message}`);
  console.error(JSON.stringify({ errors }));
  process.exitCode = 1;
}
