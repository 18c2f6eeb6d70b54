// Drives the console (GET /) in Debian's Chromium for tests/console.rs.
//
//   node console.mjs '<json options>'
//
// options: { url: the console's URL, token: the admin token,
//            expect: stream keys live before the page opens (each gets a card),
//            thumbs: of those, the ones that must show a thumbnail,
//            keyed: a stream behind play keys, key: its app's play key,
//            late: a stream published after the page opened (the caller publishes it
//                  when it reads the `opened` event and writes `published` to stdin),
//            inject: text a push URL carries that must show as text, not HTML,
//            screenshot: PNG path }
//
// Steps are reported as `EVENT {...}` lines; the last line is `RESULT {...}`.

import readline from 'node:readline';
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2] || '{}');
const emit = (kind, obj) => process.stdout.write(`${kind} ${JSON.stringify(obj)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const marks = [];
readline.createInterface({ input: process.stdin }).on('line', (l) => marks.push(l.trim()));
async function mark(name, ms) {
  const end = Date.now() + ms;
  while (!marks.includes(name)) {
    if (Date.now() > end) throw new Error(`no "${name}" mark from the test`);
    await sleep(50);
  }
}

const R = { ok: false, failure: null, errors: [], dialogs: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(opts.url).origin;
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
  const page = await context.newPage();
  page.on('pageerror', (e) => R.errors.push(String(e)));
  // (a 404 the page asked for and handles, e.g. the keyframe of a stream with no frame yet,
  // is logged by Chromium as "Failed to load resource": not an error of the page)
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) R.errors.push(m.text());
  });
  page.on('dialog', (d) => { R.dialogs.push(d.message()); d.dismiss(); });
  const card = (k) => page.locator(`article[data-stream="${k}"]`);

  // first paint: every live stream's card; then every thumbnail
  const t0 = Date.now();
  await page.goto(opts.url);
  await page.waitForFunction((n) => document.querySelectorAll('#cards article').length >= n, opts.expect.length,
    { timeout: 10000 });
  R.cardsMs = Date.now() - t0;
  await page.waitForFunction((keys) => keys.every((k) => {
    const c = document.querySelector(`article[data-stream="${k}"]`);
    return c && Number(c.dataset.thumb || 0) >= 1;
  }), opts.thumbs, { timeout: 20000 });
  R.thumbsMs = Date.now() - t0;
  emit('EVENT', { step: 'thumbs', ms: R.thumbsMs });

  // the thumbnails are pictures: many distinct colours, not one flat fill
  R.thumbs = {};
  for (const k of opts.thumbs) {
    R.thumbs[k] = await card(k).evaluate((c) => {
      const cv = c.querySelector('.thumb canvas');
      const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      const colours = new Set();
      let lit = 0;
      for (let i = 0; i < d.length; i += 4 * 7) {
        colours.add((d[i] >> 4) << 8 | (d[i + 1] >> 4) << 4 | (d[i + 2] >> 4));
        if (d[i] + d[i + 1] + d[i + 2] > 60) lit += 1;
      }
      return { width: cv.width, height: cv.height, colours: colours.size, lit, decoder: c.dataset.decoder };
    });
  }

  // the bitrate graph moves: three stats events later it has points and a non-zero rate
  await page.waitForFunction((k) => {
    const e = window.livegate.streams.get(k);
    return e && e.history.filter((x) => x > 0).length >= 3;
  }, opts.thumbs[0], { timeout: 15000 });
  R.spark = await card(opts.thumbs[0]).evaluate((c) => {
    const cv = c.querySelector('.spark');
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let drawn = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) drawn += 1;
    return { drawn, text: c.querySelector('.kbps').textContent };
  });

  // copy buttons copy the URL shown
  const first = card(opts.thumbs[0]);
  await first.locator('summary').click();
  R.copied = {};
  for (const label of ['HTTP-FLV', 'LL-HLS', 'RTMP play', 'WebSocket-FLV']) {
    await first.locator(`button.copy[data-label="${label}"]`).click();
    R.copied[label] = await page.evaluate(() => navigator.clipboard.readText());
  }
  R.watchHref = await first.locator('a.watch').getAttribute('href');

  // a stream behind play keys: no thumbnail and no URL until its key is entered
  if (opts.keyed) {
    const kc = card(opts.keyed);
    await kc.waitFor();
    await kc.locator('summary').click();
    R.keyedBefore = {
      note: await kc.locator('.thumb .note').textContent(),
      thumb: await kc.evaluate((c) => Number(c.dataset.thumb || 0)),
      urls: await kc.locator('.urls code').count(),
    };
    await kc.locator('input.playkey').fill(opts.key);
    await kc.locator('button.usekey').click();
    await page.waitForFunction((k) => Number(document.querySelector(`article[data-stream="${k}"]`).dataset.thumb || 0) >= 1,
      opts.keyed, { timeout: 15000 });
    R.keyedAfter = { urls: await kc.locator('.urls code').allTextContents() };
  }

  // a publish elsewhere shows up without a reload
  emit('EVENT', { step: 'opened' });
  await mark('published', 30000);
  const tLate = Date.now();
  await card(opts.late).waitFor({ timeout: 10000 });
  R.lateMs = Date.now() - tLate;

  // text a server or publisher said is shown as text
  if (opts.inject) {
    await page.waitForFunction((s) => document.body.textContent.includes(s), opts.inject, { timeout: 10000 });
    R.injected = await page.evaluate(() => ({
      pwned: window.__pwned === 1,
      imgs: document.querySelectorAll('#cards img').length,
    }));
  }

  // the admin token enables kick
  R.kickBeforeToken = await card(opts.late).locator('.actions button').count();
  await page.fill('#token', opts.token);
  await page.click('#token-set');
  await card(opts.late).locator('.actions button', { hasText: 'kick' }).waitFor();
  await page.evaluate(() => window.scrollTo(0, 0));
  if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
  await card(opts.late).locator('.actions button', { hasText: 'kick' }).click();
  await card(opts.late).waitFor({ state: 'detached', timeout: 10000 });
  R.kicked = true;
  R.events = await page.evaluate(() => window.livegate.events);
  R.thumbErrors = await page.evaluate(() => window.livegate.thumbErrors);
  R.totals = await page.evaluate(() => window.livegate.server);
  // on a phone: one column, nothing wider than the screen
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  R.phone = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    cardWidth: Math.round(document.querySelector('#cards article').getBoundingClientRect().width),
  }));
  if (opts.phoneScreenshot) await page.screenshot({ path: opts.phoneScreenshot });
  R.ok = true;
} catch (e) {
  R.failure = String(e && e.stack || e);
} finally {
  await browser.close();
  emit('RESULT', R);
  process.exit(0); // stdin (the marks) would keep node running
}
