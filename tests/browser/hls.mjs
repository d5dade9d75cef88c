// hls.js (from this folder's node_modules, never a CDN) in Debian's headless Chromium: one page plays every URL
// given at once, an audio element and an Hls instance each, with hls.js's defaults and no recovery of our own.
// The page is served by this script under the first URL's origin (no CORS needed, nothing else served).
// Prints JSON lines: {"url", "position"} every half second (the element's currentTime), {"url", "ended"} when
// hls.js gives up (a fatal error) or the element ends. Runs until SIGTERM or SIGINT.
// Usage: node hls.mjs <playlist url> [<playlist url> ...]   (tests/players/hlsjs.py runs it)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { run } from "./chromium.mjs";

const urls = process.argv.slice(2);
if (urls.length === 0) {
  console.error("usage: node hls.mjs <playlist url> [<playlist url> ...]");
  process.exit(2);
}

const POLL_MS = 500;
const TIMEOUT_MS = 60000;
const HUNG_MS = 15000;
const base = new URL("/__hls-player__/", urls[0]);
const hlsJs = readFileSync(createRequire(import.meta.url).resolve("hls.js/dist/hls.min.js"), "utf8");
const page = `<!doctype html><meta charset="utf-8"><title>hls.js player matrix</title>
<body>
<script src="hls.min.js"></script>
<script>
  window.ended = {};
  window.players = ${JSON.stringify(urls)}.map((url) => {
    const audio = document.body.appendChild(document.createElement("audio"));
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (data.fatal) window.ended[url] ??= \`hls.js fatal \${data.type}: \${data.details}\`;
    });
    audio.addEventListener("ended", () => { window.ended[url] ??= "the audio element ended"; });
    hls.loadSource(url);
    hls.attachMedia(audio);
    audio.play().catch((error) => { window.ended[url] ??= \`play() refused: \${error}\`; });
    return { url, audio };
  });
</script>`;

const print = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
let running = true;
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => { running = false; });
// A signal ends the loop below, which closes the browser: Playwright must not close it under us first.
try {
  await run({ handleSIGTERM: false, handleSIGINT: false }, async (context) => {
    const tab = context.pages()[0] || (await context.newPage());
    tab.on("pageerror", (error) => console.error(`page error: ${error}`));
    await tab.route(`${base.href}**`, (route) => {
      const name = new URL(route.request().url()).pathname.slice(base.pathname.length);
      if (name === "") return route.fulfill({ contentType: "text/html", body: page });
      if (name === "hls.min.js") return route.fulfill({ contentType: "text/javascript", body: hlsJs });
      return route.fulfill({ status: 404, body: "" });
    });
    await tab.goto(base.href, { timeout: TIMEOUT_MS });
    const reported = new Set();
    while (running) {
      // A page whose main thread hangs never answers: say so instead of waiting for it.
      let timer;
      const hung = new Promise((resolve) => { timer = setTimeout(() => resolve(null), HUNG_MS); });
      const state = await Promise.race([hung, tab.evaluate(() => ({
        positions: window.players.map(({ url, audio }) => ({ url, position: audio.currentTime })),
        ended: window.ended,
      }))]);
      clearTimeout(timer);
      if (state === null) {
        for (const url of urls) print({ url, ended: `the page stopped answering for ${HUNG_MS / 1000} s (hung)` });
        break;
      }
      for (const reading of state.positions) print(reading);
      for (const [url, why] of Object.entries(state.ended)) {
        if (!reported.has(url)) print({ url, ended: why });
        reported.add(url);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  });
} catch (error) {
  console.error(`hls.mjs: ${error.message}`);
  process.exitCode = 1;
}
