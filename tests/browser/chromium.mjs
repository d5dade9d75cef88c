// Debian's headless Chromium (never a downloaded browser) in a profile of its own, for the browser tests.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

// A closed network: without the background-networking flags Chromium floods it with connection attempts.
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required", "--mute-audio"];

// run(options, use): launch, await use(context), then close the browser and remove its profile, whatever happens.
export async function run(options, use) {
  const profile = mkdtempSync(join(tmpdir(), "hls-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: ARGS,
      ...options,
    });
    return await use(context);
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
