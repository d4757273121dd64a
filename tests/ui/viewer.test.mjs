// viewer.test.mjs - the twin viewer in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core), against a running engine.
// Started by tests/integration/test_ui.c, which seeds the fleet, writes
// what the page must show (--expect, counted from MongoDB) and produces a
// live event when this script asks for it (--handshake folder: this side
// writes want-event, the C side answers with event-sent).
//
//   node viewer.test.mjs --base URL --token T --expect expected.json --out DIR --handshake DIR
//
// Screenshots go to --out (viewer-twin.png, viewer-fleet.png). Prints every
// failed check and "N passed, M failed"; exits 1 if any failed.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const k of ['base', 'token', 'expect', 'out', 'handshake']) {
  if (!args[k]) { console.error(`viewer.test.mjs: --${k} is required`); process.exit(2); }
}
const X = JSON.parse(fs.readFileSync(args.expect, 'utf8'));
fs.mkdirSync(args.out, { recursive: true });
for (const f of ['viewer-twin.png', 'viewer-fleet.png', 'failure.png']) fs.rmSync(path.join(args.out, f), { force: true });

let passed = 0, failed = 0;
function check(cond, what) {
  if (cond) passed++; else { failed++; console.error(`FAIL: ${what}`); }
  return cond;
}
const log = (m) => console.log(`[ui] ${m}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmt = (n, digits = 0) => new Intl.NumberFormat('en-US', { maximumFractionDigits: digits }).format(n);
const STAGE_LABEL = { NONE: 'No lifecycle event yet', ORDERED: 'Ordered', IN_PRODUCTION: 'In production', BUILT: 'Built',
  IN_TRANSIT: 'In transit', AT_DEALER: 'At dealer', IN_SERVICE: 'In service', DECOMMISSIONED: 'Decommissioned' };

async function waitFile(file, seconds) {
  for (let i = 0; i < seconds * 10; i++) {
    if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8');
    await sleep(100);
  }
  return null;
}

// Presses Tab until pred(activeElement) holds; false after max presses.
async function tabTo(page, pred, max, arg) {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(pred, arg)) return true;
  }
  return false;
}

// Accessibility checks a browser can measure: labels, names, contrast.
async function a11y(page, where) {
  const r = await page.evaluate(() => {
    const out = { unlabeled: [], unnamed: [], contrast: [], h1: 0, checked: 0 };
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type !== 'hidden' && !el.labels.length && !el.getAttribute('aria-label')) out.unlabeled.push(el.id || el.name);
    }
    for (const el of document.querySelectorAll('button, a[href], svg[role="img"]')) {
      const name = (el.getAttribute('aria-label') || el.textContent || '').trim();
      if (el.getClientRects().length && !name) out.unnamed.push(el.outerHTML.slice(0, 80));
    }
    out.h1 = [...document.querySelectorAll('h1')].filter((e) => e.getClientRects().length).length;
    const rgb = (c) => c.match(/[\d.]+/g).map(Number);
    const lum = (c) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
    };
    const bg = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length < 4 || c[3] > 0.5) return c;
      }
      return [255, 255, 255];
    };
    for (const el of document.querySelectorAll('body *')) {
      if (el.closest('svg') || el.closest('.sr-only') || !el.getClientRects().length) continue;
      if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
      const cs = getComputedStyle(el);
      if (cs.visibility === 'hidden') continue;
      const a = lum(rgb(cs.color)), b = lum(bg(el));
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
      const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
      out.checked++;
      if (ratio < need) out.contrast.push(`${el.tagName.toLowerCase()}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1 < ${need}:1`);
    }
    return out;
  });
  check(!r.unlabeled.length, `${where}: form fields without a label: ${r.unlabeled}`);
  check(!r.unnamed.length, `${where}: controls or images without a name: ${r.unnamed}`);
  check(r.h1 === 1, `${where}: ${r.h1} visible h1 headings`);
  check(r.checked > 5 && !r.contrast.length, `${where}: contrast below WCAG AA (${r.checked} checked): ${r.contrast.slice(0, 5).join('; ')}`);
  log(`${where}: ${r.checked} text elements meet WCAG AA contrast`);
}

const browser = await chromium.launch({ executablePath: process.env.TWIN_CHROMIUM || '/usr/bin/chromium' });
log(`chromium ${browser.version()}, ${args.base}`);
const context = await browser.newContext({ locale: 'en-US', timezoneId: 'UTC', viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => {
  // The 401s of the token step are expected; the browser logs them as errors.
  if (m.type() === 'error' && !/status of 401/.test(m.text())) pageErrors.push(m.text());
});
const requests = [];
page.on('request', (r) => requests.push(r.url()));
page.setDefaultTimeout(30000);
const vin = X.vin, prefix = X.prefix;

try {
  // ---- search, by keyboard only; the server asks for a token ------------------
  await page.goto(`${args.base}/`);
  await page.waitForSelector('#view-search:not([hidden])');
  await a11y(page, 'search page');
  check(await tabTo(page, () => document.activeElement.id === 'search-q', 15), 'Tab never reaches the search field');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== 'none', `the focused search field shows no focus outline (${outline})`);
  await page.keyboard.type(prefix);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#auth:not([hidden])');
  check((await page.textContent('#auth-msg')).includes('needs an access token'), `401 message: ${await page.textContent('#auth-msg')}`);
  check(await page.evaluate(() => document.activeElement.id === 'token'), 'the token field does not get the focus');
  await page.keyboard.type('not-the-token');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.getElementById('auth-msg').textContent.includes('refused'));
  check((await page.textContent('#auth-msg')).includes('invalid bearer token'), `wrong token message: ${await page.textContent('#auth-msg')}`);
  await a11y(page, 'token form');
  await page.keyboard.type(args.token);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#search-results tbody tr');
  const ids = await page.$$eval('#search-results tbody th a', (as) => as.map((a) => a.textContent));
  check(JSON.stringify(ids) === JSON.stringify(X.prefix_ids), `search '${prefix}': ${ids} != ${X.prefix_ids}`);
  check(page.url().endsWith(`/?by=vin&q=${prefix}`), `search URL ${page.url()}`);
  check(await tabTo(page, (h) => document.activeElement.getAttribute('href') === h, 80, `/twins/${encodeURIComponent(vin)}`),
    `Tab never reaches the result link of ${vin}`);
  await page.keyboard.press('Enter');

  // ---- the twin -----------------------------------------------------------------
  await page.waitForSelector('[data-testid=timeline] tbody tr');
  check(page.url() === `${args.base}/twins/${vin}`, `twin URL ${page.url()}`);
  check((await page.textContent('h1#twin-title')) === vin, 'twin heading');
  check((await page.textContent('[data-testid=stage]')) === STAGE_LABEL[X.stage], `stage ${await page.textContent('[data-testid=stage]')}`);
  // The table lists the newest first.
  const rows = (await page.$$eval('[data-testid=timeline] tbody tr', (trs) => trs.map((tr) => [tr.dataset.kind, tr.dataset.status, tr.textContent]))).reverse();
  check(rows.length === X.timeline.length, `timeline rows ${rows.length} != ${X.timeline.length}`);
  check(rows.every((r, i) => X.timeline[i] && r[0] === X.timeline[i].kind && r[1] === X.timeline[i].status), 'timeline rows differ from the stored timeline (kind, status, order)');
  const rejected = X.timeline.filter((e) => e.status === 'rejected');
  check(rejected.length > 0, 'the chosen twin has no rejected event');
  rows.filter((r) => r[1] === 'rejected').forEach((r, i) => check(r[2].includes(`Rejected: ${rejected[i].reason}`), `rejected row ${i} lacks its reason: ${r[2]}`));
  check(await page.$$eval('svg.strip g.mark', (g) => g.length) === X.timeline.length, 'strip marks != timeline entries');
  check(await page.$$eval('svg.strip g.mark.rejected', (g) => g.length) === rejected.length, 'strip rejected marks');
  for (const kind of ['ORDERED', 'BUILD_COMPLETED', 'DELIVERED', 'SERVICE_VISIT']) {
    check(rows.some((r) => r[0] === kind), `timeline lacks ${kind}`);
  }
  const alert = await page.textContent(`[data-testid=alerts] li[data-rule=${X.alert_rule}]`);
  check(alert && alert.includes(X.alert_severity) && alert.includes('against threshold'), `alert ${X.alert_rule}: ${alert}`);
  // A predicted alert whose date lies behind the twin's latest event says so.
  for (const text of await page.$$eval('[data-testid=alerts] li', (li) => li.map((e) => e.textContent))) {
    if (/predicted for/.test(text) && /Value -/.test(text)) {
      check(text.includes('(the predicted date has passed)'), `overdue prediction not marked: ${text}`);
    }
  }
  const wheels = await page.$$eval('[data-testid=wheels] .wheel', (w) => w.map((e) => e.textContent));
  check(wheels.length === 4 && wheels.every((w) => /kPa/.test(w) && /mm/.test(w)), `wheels: ${wheels}`);
  check(/km/.test(await page.textContent('[data-signal=odometer_km] .value')), 'odometer has no unit');
  await a11y(page, 'twin page');

  // ---- live: a new event reaches the open page without a reload ---------------------
  // When the odometer text first changes, by the page's clock (this machine's).
  await page.evaluate(() => {
    window.__sameDocument = true;
    const before = document.querySelector('[data-signal=odometer_km] .value').textContent;
    const timer = setInterval(() => {
      const el = document.querySelector('[data-signal=odometer_km] .value');
      if (el && el.textContent !== before) { window.__changedAt = Date.now(); clearInterval(timer); }
    }, 50);
  });
  fs.writeFileSync(path.join(args.handshake, 'want-event'), vin);
  const sent = await waitFile(path.join(args.handshake, 'event-sent'), 60);
  check(sent !== null, 'the test harness did not produce the live event within 60 s');
  // The fleet figures come with the answer: counted after the event was stored.
  const F = sent !== null ? JSON.parse(sent) : null;
  if (F) {
    const odo = F.odometer_km, want = `${fmt(odo)} km`;
    const ok = await page.waitForFunction((w) => document.querySelector('[data-signal=odometer_km] .value').textContent === w, want,
      { timeout: 30000 }).then(() => true, () => false);
    check(ok, `odometer did not become ${want} within 30 s: ${await page.textContent('[data-signal=odometer_km] .value')}`);
    check(await page.evaluate(() => window.__sameDocument === true), 'the page reloaded to show the new value');
    check((await page.textContent('[data-testid=odometer]')) === `${fmt(odo, 1)} km`, 'identity odometer not updated');
    const at = await page.evaluate(() => window.__changedAt);
    log(`live update: odometer ${want} on the page ${at - F.produced_at_ms} ms after the event was produced (poll every 3 s)`);
  }
  await page.screenshot({ path: path.join(args.out, 'viewer-twin.png'), fullPage: true });

  // ---- the fleet page -------------------------------------------------------------
  if (!F) throw new Error('no fleet figures: the live event step failed');
  await page.click('nav a[data-nav=fleet]');
  await page.waitForSelector('[data-testid=by-stage]');
  check((await page.textContent('[data-testid=fleet-twins]')) === fmt(F.twins), `fleet total ${await page.textContent('[data-testid=fleet-twins]')} != ${F.twins}`);
  for (const [stage, n] of Object.entries(F.by_stage)) {
    if (stage === 'NONE' && !n) continue;
    const got = await page.textContent(`[data-testid=by-stage] li[data-key=${stage}] .count`);
    check(got === fmt(n), `stage ${stage}: page ${got}, MongoDB ${n}`);
  }
  const pageRules = await page.$$eval('[data-testid=by-rule] li', (lis) => Object.fromEntries(lis.map((li) => [li.dataset.key, li.querySelector('.count').textContent])));
  check(JSON.stringify(Object.keys(pageRules).sort()) === JSON.stringify(Object.keys(F.alerts_by_rule).sort()), `rules ${Object.keys(pageRules)} != ${Object.keys(F.alerts_by_rule)}`);
  for (const [rule, n] of Object.entries(F.alerts_by_rule)) check(pageRules[rule] === fmt(n), `rule ${rule}: page ${pageRules[rule]}, MongoDB ${n}`);
  check(F.alerts_by_rule[X.alert_rule] > 0, `the fleet page lacks the twin's alert ${X.alert_rule}`);
  await page.click('[data-testid=battery] summary');
  const bins = await page.$$eval('[data-testid=battery] tbody tr', (trs) => trs.map((tr) => Number(tr.querySelector('td').textContent)));
  check(JSON.stringify(bins) === JSON.stringify([...F.soh_bins, F.soh_none]), `battery bins ${bins} != MongoDB ${F.soh_bins} + ${F.soh_none}`);
  check(await page.$$eval('svg.hist rect.hbar', (r) => r.length) === F.soh_bins.length, 'histogram bars');
  const brake = await page.$$eval('[data-testid=brakes] tbody th a', (as) => as.map((a) => a.textContent));
  check(JSON.stringify(brake) === JSON.stringify(F.brake_ids), `brake list ${brake} != ${F.brake_ids}`);
  await a11y(page, 'fleet page');
  await page.screenshot({ path: path.join(args.out, 'viewer-fleet.png'), fullPage: true });

  check(!pageErrors.length, `errors in the page: ${pageErrors.slice(0, 3)}`);

  // ---- an unknown VIN (its 404 is the expected answer) ------------------------------
  await page.goto(`${args.base}/twins/NO-SUCH-VIN`);
  await page.waitForFunction(() => document.getElementById('twin-status').textContent.includes('No vehicle'));
  check(await page.evaluate(() => sessionStorage.getItem('twin.token') !== null), 'the token is not kept for the tab');

  // ---- nothing from elsewhere -------------------------------------------------------
  const foreign = requests.filter((u) => !u.startsWith(args.base));
  check(!foreign.length, `requests to other hosts: ${foreign.slice(0, 3)}`);
} catch (e) {
  check(false, `unexpected: ${e.stack || e}`);
  await page.screenshot({ path: path.join(args.out, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
console.log(`viewer.test.mjs: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
