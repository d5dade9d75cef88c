// hls.js (from this folder's node_modules, never a CDN) in Debian's headless Chromium: one page plays every URL
// given at once, an audio element and an Hls instance each, with hls.js's defaults and no recovery of our own.
// The page is served by this script under the first URL's origin (no CORS needed, nothing else served).
// Prints JSON lines: {"url", "position"} every half second (the element's currentTime), {"url", "ended"} when
// hls.js gives up (a fatal error) or the element ends, and {"url", "metadata"} for each timed ID3 tag hls.js hands
// over (Hls.Events.FRAG_PARSING_METADATA): its PTS (s), the fragment's URL and its frames decoded here, text frames
// as {id: text} and TXXX as {"TXXX:<description>": value}. Runs until SIGTERM or SIGINT.
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
  // ID3v2.3/2.4 (id3.org): a 10-byte header with a syncsafe size, then frames of a 4-character id, a size (syncsafe
  // in 2.4) and 2 flag bytes. Text frames start with their encoding: 0 Latin-1, 1 UTF-16 with BOM, 2 UTF-16BE,
  // 3 UTF-8; TXXX holds a description and a value, each ended by a NUL of that encoding.
  const ENCODINGS = ["latin1", "utf-16", "utf-16be", "utf-8"];
  const syncsafe = (b, i) => (b[i] << 21) | (b[i + 1] << 14) | (b[i + 2] << 7) | b[i + 3];
  function id3Frames(data) {
    const frames = {};
    if (String.fromCharCode(...data.subarray(0, 3)) !== "ID3") return { error: "no ID3 header" };
    const version = data[3];
    const end = Math.min(data.length, 10 + syncsafe(data, 6));
    for (let at = 10; at + 10 <= end;) {
      const id = String.fromCharCode(...data.subarray(at, at + 4));
      const size = version >= 4 ? syncsafe(data, at + 4)
        : ((data[at + 4] << 24) | (data[at + 5] << 16) | (data[at + 6] << 8) | data[at + 7]) >>> 0;
      if (!/^[A-Z0-9]{4}$/.test(id) || size === 0) break; // padding, or not a frame
      const body = data.subarray(at + 10, at + 10 + size);
      at += 10 + size;
      if (id[0] !== "T") continue;
      const encoding = ENCODINGS[body[0]] || "utf-8";
      const texts = new TextDecoder(encoding).decode(body.subarray(1)).split("\\0");
      if (id === "TXXX") frames["TXXX:" + texts[0]] = texts[1] ?? "";
      else frames[id] = texts[0];
    }
    return frames;
  }
  window.ended = {};
  window.metadata = [];
  window.players = ${JSON.stringify(urls)}.map((url) => {
    const audio = document.body.appendChild(document.createElement("audio"));
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (data.fatal) window.ended[url] ??= \`hls.js fatal \${data.type}: \${data.details}\`;
    });
    hls.on(Hls.Events.FRAG_PARSING_METADATA, (event, data) => {
      for (const sample of data.samples) {
        window.metadata.push({ url, metadata: { pts: sample.pts, fragment: data.frag.relurl,
                                                 frames: id3Frames(sample.data) } });
      }
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
        metadata: window.metadata.splice(0),
      }))]);
      clearTimeout(timer);
      if (state === null) {
        for (const url of urls) print({ url, ended: `the page stopped answering for ${HUNG_MS / 1000} s (hung)` });
        break;
      }
      for (const reading of state.positions) print(reading);
      for (const tag of state.metadata) print(tag);
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
