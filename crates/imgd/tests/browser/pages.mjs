// Drives Debian's Chromium through a running daemon's web page, as a user would.
//
//   node pages.mjs BASE_URL TOKEN OUT_DIR SIGN_ID PORTRAIT_ID
//
// BASE_URL is a daemon bound beyond loopback (so every page needs the token). Checks, in order:
// without the token the page answers 401; with it the dashboard connects to its event stream
// and its counters change while a run goes on, and again after the daemon restarts (the
// script prints RESTART and the test restarts it); searching a word of the sign photo shows its
// thumbnail; the sign's page lists its OCR lines and draws their boxes; the portrait's page
// draws the face box, and naming the face through its form shows the name. Writes a
// screenshot of each page to OUT_DIR. Prints one line per check; exits 1 on the first failure.

import { chromium } from "playwright-core";

const [base, token, out, signId, portraitId] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(`FAILED: ${message}`);
  console.log(`ok: ${message}`);
}

const browser = await chromium.launch({
  executablePath,
  // The tests may run as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);

  const refused = await page.goto(`${base}/`);
  check(refused.status() === 401, `without the token the page answers 401 (got ${refused.status()})`);

  // The token once in the address; the cookie carries it from then on.
  const dashboard = await page.goto(`${base}/?token=${encodeURIComponent(token)}`);
  check(dashboard.status() === 200, "with the token the dashboard answers 200");
  await page.waitForSelector("#live.on");
  check(true, "the dashboard's event stream is connected");
  const done = page.locator("#module-embedding [data-f=done]");
  const before = await done.textContent();
  await page.waitForFunction(
    (before) => document.querySelector("#module-embedding [data-f=done]").textContent !== before,
    before,
    { timeout: 60_000 },
  );
  check(true, `the embedding counter moved from ${before} to ${await done.textContent()} without a reload`);
  await page.screenshot({ path: `${out}/dashboard.png`, fullPage: true });

  // The daemon is restarted (by the test, when told): the page reconnects by itself.
  console.log("RESTART");
  await page.waitForSelector("#live:not(.on)", { timeout: 60_000 });
  check(true, "the dashboard sees the daemon go");
  await page.waitForSelector("#live.on", { timeout: 60_000 });
  const after = await done.textContent();
  await page.waitForFunction(
    (after) => document.querySelector("#module-embedding [data-f=done]").textContent !== after,
    after,
    { timeout: 60_000 },
  );
  check(true, `after the restart the stream reconnected and the counter moves on (${after} to ${await done.textContent()})`);

  await page.goto(`${base}/search?q=wedding`);
  const thumbnail = page.locator(`#results img[src="/image/${signId}/thumbnail.jpg"]`);
  await thumbnail.waitFor();
  const width = await thumbnail.evaluate(async (img) => {
    await img.decode();
    return img.naturalWidth;
  });
  check(width > 0, `searching "wedding" shows the sign's thumbnail (${width} px wide)`);
  await page.screenshot({ path: `${out}/search.png`, fullPage: true });

  await page.goto(`${base}/image/${signId}`);
  const lines = await page.locator("#ocr-lines li").allTextContents();
  check(lines.includes("Wedding of Sara and Tom"), `the sign's page lists its OCR lines: ${JSON.stringify(lines)}`);
  const textBoxes = await page.locator("polygon.box.text").count();
  check(textBoxes === lines.length, `one box drawn per OCR line (${textBoxes})`);
  await page.screenshot({ path: `${out}/image-text.png`, fullPage: true });

  await page.goto(`${base}/image/${portraitId}`);
  const faceBox = page.locator("polygon.box.face");
  check((await faceBox.count()) === 1, "the portrait's page draws one face box");
  const drawn = await faceBox.boundingBox();
  check(drawn.width > 20 && drawn.height > 20, `the face box has a size on screen (${Math.round(drawn.width)} × ${Math.round(drawn.height)})`);
  const form = page.locator("form.name-face").first();
  await form.locator("input[name=name]").fill("Eileen Collins");
  await Promise.all([page.waitForEvent("load"), form.locator("button").click()]);
  const named = await page.locator("#faces a").first().textContent();
  check(named === "Eileen Collins", `the named face shows its name (${named})`);
  await page.screenshot({ path: `${out}/image-face.png`, fullPage: true });

  await page.goto(`${base}/people`);
  const people = await page.locator(".people li").allTextContents();
  check(people.some((p) => p.includes("Eileen Collins")), "the people page lists the name");
  await page.screenshot({ path: `${out}/people.png`, fullPage: true });
} finally {
  await browser.close();
}
