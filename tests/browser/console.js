// The PhyStack console in a real browser: playwright-core drives Debian's Chromium
// (headless, never a downloaded browser) against a hub and an agent on loopback,
// started by tests/integration/test_browser.py, which passes:
//   HUB_URL, TENANT, USER, PASSWORD, TENANT_B, USER_B, PASSWORD_B,
//   AGENT_STATE (the agent's state folder), AGENT_SERIAL, XSS_SERIAL (registered, never
//   picked up), DUP_SERIAL (registered twice), SHOT_DIR, CHROMIUM.
// Any console error (other than the API's own expected 4xx answers), page error,
// CSP violation or JavaScript dialog fails the run. Prints "OK <seconds>" at the end.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const env = (k, d) => {
  const v = process.env[k] === undefined ? d : process.env[k];
  if (v === undefined) throw new Error('missing env ' + k);
  return v;
};
const C = {
  url: env('HUB_URL'),
  tenant: env('TENANT'), user: env('USER'), password: env('PASSWORD'),
  tenantB: env('TENANT_B'), userB: env('USER_B'), passwordB: env('PASSWORD_B'),
  agentState: env('AGENT_STATE'), agentSerial: env('AGENT_SERIAL'),
  xssSerial: env('XSS_SERIAL'), dupSerial: env('DUP_SERIAL'),
  shots: env('SHOT_DIR'), chromium: env('CHROMIUM', '/usr/bin/chromium'),
};
const XSS_NAME = '<img src=x onerror=alert(1)>';
const XSS_TAG = '<script>alert(4)</script>';
const ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
const T0 = Date.now();
const problems = [];
const apiErrors = [];
// Chromium logs "Failed to load resource" for every 4xx answer. Only the negative
// checks expect them; during the ordinary flow (first visit, login, claim, device
// page, desired change, audit, phone) the console must stay free of errors.
let negative = null;

function log(...a) {
  console.log('[' + ((Date.now() - T0) / 1000).toFixed(1).padStart(5) + 's]', ...a);
}

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
}

/** Logs a finished step; fails at once if the browser reported a problem so far. */
function step(...a) {
  log(...a);
  noProblems(String(a[0]));
}

function noProblems(where) {
  if (problems.length) throw new Error('browser problems (' + where + '):\n  ' + problems.join('\n  '));
}

/** Every console error, page error and dialog of a page is a failure, except the
 * "Failed to load resource" line Chromium logs for an API answer of 4xx that the
 * console expects (401 before login, 404/409/412/429 in the checks). */
function watch(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    const text = msg.text();
    const where = (msg.location() && msg.location().url) || '';
    const m = /Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    if (m && negative && /\/api\/v1\//.test(where) && Number(m[1]) >= 400 && Number(m[1]) < 500) {
      apiErrors.push(label + ' ' + negative + ' ' + m[1] + ' ' + where.replace(C.url, ''));
      return;
    }
    if (msg.type() === 'warning') {
      log(label, 'console warning:', text);
      return;
    }
    problems.push(label + ' console error: ' + text + (where ? ' at ' + where : ''));
  });
  page.on('pageerror', (err) => problems.push(label + ' page error: ' + err.message));
  page.on('dialog', (d) => {
    problems.push(label + ' a ' + d.type() + ' dialog fired: ' + d.message());
    d.dismiss().catch(() => {});
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().includes('/api/v1/')) {
      problems.push(label + ' ' + r.status() + ' for ' + r.url());
    }
  });
}

/** Marks the start (label) or end (null) of a negative check; the end waits a moment
 * for the console messages of its last answers. */
async function expect4xx(label) {
  if (!label) await new Promise((r) => setTimeout(r, 300));
  negative = label;
}

async function shot(page, name, opts = {}) {
  const file = path.join(C.shots, name + '.png');
  await page.screenshot(Object.assign({ path: file }, opts));
  log('screenshot', file, fs.statSync(file).size, 'bytes');
}

/** Waits (with a deadline) until fn() is truthy; returns its value. */
async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out after ' + ms / 1000 + ' s waiting for ' + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** fetch() from inside the page (same origin, the page's cookie). */
function pageFetch(page, method, url, opts = {}) {
  return page.evaluate(async ([method, url, opts]) => {
    const headers = Object.assign({}, opts.headers || {});
    if (opts.csrf) {
      const s = await fetch('/api/v1/session').then((r) => r.json());
      headers['X-CSRF-Token'] = s.csrf_token;
    }
    const init = { method, headers };
    if (opts.body !== undefined) {
      headers['Content-Type'] = opts.contentType || 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    const r = await fetch(url, init);
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    return { status: r.status, data };
  }, [method, url, opts]);
}

// ---- accessibility checks run on every page ----
async function a11y(page, where) {
  const issues = await page.evaluate(() => {
    const out = [];
    const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length) &&
      getComputedStyle(el).visibility !== 'hidden';
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (!visible(el) || el.type === 'hidden') continue;
      const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
      if (!named) out.push('no label: ' + el.outerHTML.slice(0, 80));
    }
    for (const el of document.querySelectorAll('button, a[href]')) {
      if (!visible(el)) continue;
      if (!(el.textContent.trim() || el.getAttribute('aria-label'))) out.push('no name: ' + el.outerHTML.slice(0, 80));
    }
    for (const img of document.querySelectorAll('img')) {
      if (!img.hasAttribute('alt')) out.push('img without alt');
    }
    for (const sel of ['header', 'main']) if (!document.querySelector(sel)) out.push('no <' + sel + '> landmark');
    if (!document.querySelector('h1')) out.push('no h1');
    if (!document.querySelector('[aria-live], [role=status], [role=alert]')) out.push('no live region');
    // Text contrast (WCAG AA: 4.5:1, 3:1 for large text) against the composited background.
    const parse = (c) => {
      const m = /rgba?\(([^)]+)\)/.exec(c);
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
    };
    const lum = (rgb) => {
      const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
      return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
    };
    const bgOf = (el) => {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
      }
      let rgb = [255, 255, 255];
      for (const l of layers.reverse()) rgb = rgb.map((v, i) => l.rgb[i] * l.a + v * (1 - l.a));
      return rgb;
    };
    const seen = new Set();
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el || seen.has(el) || !visible(el)) continue;
      seen.add(el);
      if (el.closest('[disabled], option, noscript, dialog:not([open])')) continue;
      const cs = getComputedStyle(el);
      const fg = parse(cs.color);
      const bg = bgOf(el);
      const rgb = fg.rgb.map((v, i) => v * fg.a + bg[i] * (1 - fg.a));
      const [a, b] = [lum(rgb), lum(bg)].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      const size = parseFloat(cs.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(cs.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) out.push('contrast ' + ratio.toFixed(2) + ' for "' + n.textContent.trim().slice(0, 30) + '"');
    }
    return out;
  });
  check(issues.length === 0, 'accessibility on ' + where + ':\n  ' + issues.join('\n  '));
}

async function readCode() {
  const file = path.join(C.agentState, 'provisioning-code');
  return until(() => {
    try {
      const c = fs.readFileSync(file, 'utf8').trim();
      return /^[A-Z2-9]{6}$/.test(c) ? c : null;
    } catch (e) {
      return null;
    }
  }, 'the agent\'s provisioning-code');
}

async function login(page, tenant, user, password) {
  await page.fill('#tenant', tenant);
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.click('form button[type=submit]');
  await page.waitForSelector('h1:text-is("Devices")');
  await page.waitForSelector('#live-state.on');
}

async function main() {
  fs.mkdirSync(C.shots, { recursive: true });
  const browser = await chromium.launch({ executablePath: C.chromium, args: ['--no-sandbox'] });
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  const ctxA = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctxA.setDefaultTimeout(15000);
  const page = await ctxA.newPage();
  watch(page, 'A');

  // ---- login page, served by the hub under its CSP ----
  const resp = await page.goto(C.url + '/');
  const csp = resp.headers()['content-security-policy'] || '';
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp) && /style-src 'self'/.test(csp),
    'CSP on / is strict: ' + csp);
  await page.waitForSelector('#tenant');
  await a11y(page, 'login');
  await page.fill('#tenant', C.tenant);
  await page.fill('#user', C.user);
  await page.fill('#password', 'not the password');
  await shot(page, 'login');
  // A wrong password: one clear message.
  await expect4xx('wrong password');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#login-msg:has-text("not right")');
  await expect4xx(null);
  // Log in with the keyboard only.
  await page.focus('#tenant');
  await page.fill('#tenant', '');
  await page.keyboard.type(C.tenant);
  await page.keyboard.press('Tab');
  await page.keyboard.press('Control+A');
  await page.keyboard.type(C.user);
  await page.keyboard.press('Tab');
  await page.keyboard.type(C.password);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text-is("Devices")');
  await page.waitForSelector('#live-state.on');
  step('logged in as', C.user);

  // ---- a second tab on the devices list: it must follow the claim live ----
  const list = await ctxA.newPage();
  watch(list, 'A-list');
  await list.goto(C.url + '/#/devices');
  await list.waitForSelector('#live-state.on');
  await list.evaluate(() => { window.__noReload = 'still the same page'; });

  // ---- add the agent's device by the code it shows ----
  const code = await readCode();
  log('agent shows code', code);
  await page.click('nav a:text-is("Add device")');
  await page.waitForSelector('#claim-ident');
  await page.fill('#claim-ident', code.toLowerCase()); // codes are case-insensitive
  await page.waitForSelector('#claim-kind:has-text("This is a code")');
  await page.fill('#claim-name', 'Lobby display');
  check((await page.textContent('#claim-preview .claim-value')) === code, 'preview shows the code');
  await a11y(page, 'add device');
  await shot(page, 'add-device');
  // Record each status the result shows on its way to online.
  await page.evaluate(() => {
    window.__seen = [];
    new MutationObserver(() => {
      const b = document.querySelector('#claim-result .badge');
      const s = b && b.dataset.status;
      if (s && window.__seen[window.__seen.length - 1] !== s) window.__seen.push(s);
    }).observe(document.getElementById('main'), { subtree: true, childList: true, attributes: true });
  });
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-result:not([hidden])');
  const devId = (await page.textContent('#claim-result code.id')).trim();
  check(/^dev_[a-z2-7]{26}$/.test(devId), 'device ID ' + devId);
  log('claimed', devId);
  await page.waitForSelector('#claim-result .badge[data-status="online"]', { timeout: 30000 });
  const seen = await page.evaluate(() => window.__seen);
  log('add-device result went through', seen.join(' -> '));
  check(seen[0] === 'waiting', 'first "waiting for device": ' + seen);
  check(seen.includes('provisioned'), '"provisioned" shown: ' + seen);
  check(seen[seen.length - 1] === 'online', 'ends online: ' + seen);
  await page.waitForSelector('#claim-result li.done:has-text("Online")');
  await shot(page, 'add-device-result');

  // The list in the other tab got the new row and saw it go online, without a reload.
  await list.waitForSelector('tr[data-device-id="' + devId + '"][data-status="online"]', { timeout: 20000 });
  check((await list.evaluate(() => window.__noReload)) === 'still the same page', 'the list tab was not reloaded');
  check((await list.textContent('tr[data-device-id="' + devId + '"] td.name-cell')).includes('Lobby display'), 'row name');
  check((await list.textContent('tr[data-device-id="' + devId + '"]')).includes(C.agentSerial), 'row serial');
  // The agent's first status report reaches the row live too.
  await list.waitForSelector('tr[data-device-id="' + devId + '"] td[data-label="Last status"] time', { timeout: 15000 });
  // search filter
  await list.fill('#dev-search', 'lobby');
  await list.waitForSelector('#dev-count:has-text("1")');
  await list.fill('#dev-search', 'no such device here');
  await list.waitForSelector('text=No device matches the filter.');
  await list.fill('#dev-search', '');
  await list.selectOption('#dev-status', 'offline');
  await list.waitForSelector('tr[data-device-id="' + devId + '"]', { state: 'detached' });
  await list.selectOption('#dev-status', '');
  await list.waitForSelector('tr[data-device-id="' + devId + '"]');
  check((await list.textContent('#devices-table')).includes('Warehouse gateway'), 'the other device is listed');
  await list.waitForSelector('tr[data-status="provisioned"]:has-text("Warehouse gateway")');
  await a11y(list, 'devices');
  await shot(list, 'devices');
  step('devices list: live row, search and status filter ok');

  // ---- device page: twin, desired editor, status history ----
  await page.bringToFront(); // a background tab's animation frames are throttled
  await page.click('#claim-result a:text-is("Open the device page")');
  await page.waitForSelector('#device-title:text-is("Lobby display")');
  await page.waitForSelector('#fact-status[data-status="online"]');
  await page.waitForSelector('#config-applied[data-version="0"]', { timeout: 20000 });
  await page.waitForSelector('#status-history tbody tr', { timeout: 15000 });
  await page.fill('#desired-patch', '{"color": "blue", "volume": 3}');
  await page.click('form:has(#desired-patch) button[type=submit]');
  await page.waitForSelector('#desired-msg:has-text("Saved as desired version 1")');
  // The agent applies it, reports config_status, and the twin updates live.
  await page.waitForSelector('#config-applied[data-version="1"]', { timeout: 20000 });
  const cfg = JSON.parse(fs.readFileSync(path.join(C.agentState, 'config.json'), 'utf8'));
  check(cfg.color === 'blue' && cfg.volume === 3, 'agent config.json ' + JSON.stringify(cfg));
  check((await page.textContent('#twin-desired')).includes('"color": "blue"'), 'desired shows color');
  check((await page.textContent('#desired-title')) === 'Desired (version 1)', 'desired version shown');
  // The reported hook output carries markup: shown as text, never run.
  const out = await page.textContent('#config-sync pre.hook-output');
  check(out.includes("<script>alert('reported')</script>") && out.includes('<img src=x onerror=alert(2)>'),
    'hook output shown as text: ' + out);
  check((await page.locator('main script, main img').count()) === 0, 'no script/img element in main');
  check((await page.textContent('#twin-reported')).includes('config_status'), 'reported twin shows config_status');
  await a11y(page, 'device');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'device');
  step('desired version 1 applied by the agent; reported twin updated live');

  // A conflict: someone else changes the configuration after the editor was loaded.
  await expect4xx('conflict');
  const other = await pageFetch(page, 'PATCH', '/api/v1/devices/' + devId + '/twin/desired',
    { csrf: true, body: { volume: 4 }, contentType: 'application/merge-patch+json' });
  check(other.status === 200 && other.data.version === 2, 'concurrent patch ' + JSON.stringify(other));
  await page.fill('#desired-patch', '{"color": "red"}');
  await page.click('form:has(#desired-patch) button[type=submit]');
  await page.waitForSelector('#desired-msg:has-text("someone else changed this configuration")');
  check((await page.textContent('#desired-msg')).includes('now at version 2'), 'conflict names the current version');
  await shot(page, 'device-conflict');
  await expect4xx(null);
  await page.click('#desired-reload');
  await page.waitForSelector('#desired-base:has-text("Editing against desired version 2.")');
  check((await page.inputValue('#desired-patch')) === '{"color": "red"}', 'the patch is kept after reload');
  await page.click('form:has(#desired-patch) button[type=submit]');
  await page.waitForSelector('#desired-msg:has-text("Saved as desired version 3")');
  await page.waitForSelector('#config-applied[data-version="3"]', { timeout: 20000 });
  const cfg3 = JSON.parse(fs.readFileSync(path.join(C.agentState, 'config.json'), 'utf8'));
  check(cfg3.color === 'red' && cfg3.volume === 4, 'config after the conflict ' + JSON.stringify(cfg3));
  step('conflict (412) explained, reload and re-apply ok');

  // ---- CSRF: a state-changing request without (or with a wrong) X-CSRF-Token ----
  await expect4xx('csrf');
  for (const headers of [{}, { 'X-CSRF-Token': 'x'.repeat(43) }]) {
    const r = await pageFetch(page, 'POST', '/api/v1/devices/' + devId + '/revoke', { headers });
    check(r.status === 403 && r.data && r.data.error === 'csrf_failed', 'revoke without CSRF token: ' + JSON.stringify(r));
  }
  const r2 = await pageFetch(page, 'PATCH', '/api/v1/devices/' + devId + '/twin/desired',
    { body: { color: 'green' }, contentType: 'application/merge-patch+json' });
  check(r2.status === 403, 'patch without CSRF token: ' + r2.status);
  const r3 = await pageFetch(page, 'POST', '/api/v1/logout', {});
  check(r3.status === 403, 'logout without CSRF token: ' + r3.status);
  const still = await pageFetch(page, 'GET', '/api/v1/devices/' + devId);
  check(still.status === 200 && still.data.state !== 'revoked' && still.data.twin.desired.color === 'red',
    'nothing changed by the refused requests');
  step('CSRF: requests without the token refused (403)');
  await expect4xx(null);

  // ---- tenant B cannot see or change tenant A's device ----
  const ctxB = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctxB.setDefaultTimeout(15000);
  const pb = await ctxB.newPage();
  watch(pb, 'B');
  await pb.goto(C.url + '/');
  await pb.waitForSelector('#tenant');
  // Login throttling: after 5 failed logins of one user even the right password waits.
  await expect4xx('login throttle');
  for (let i = 0; i < 6; i++) {
    const r = await pageFetch(pb, 'POST', '/api/v1/login', { body: { tenant: C.tenantB, user: 'mallory', password: 'guess ' + i } });
    check(r.status === (i < 5 ? 401 : 429), 'failed login ' + i + ': ' + r.status);
  }
  await pb.fill('#tenant', C.tenantB);
  await pb.fill('#user', 'mallory');
  await pb.fill('#password', 'guess 7');
  await pb.click('form button[type=submit]');
  await pb.waitForSelector('#login-msg:has-text("Too many failed logins")');
  check(/try again in \d+ (minute|second)/.test(await pb.textContent('#login-msg')), 'login throttle names the wait');
  await expect4xx(null);
  step('login throttling message');
  await login(pb, C.tenantB, C.userB, C.passwordB);
  const base = '/api/v1/devices/' + devId;
  await expect4xx('tenant B');
  const tries = [
    ['GET', base, {}], ['GET', base + '/status-history', {}],
    ['PATCH', base + '/twin/desired', { csrf: true, body: { x: 1 }, contentType: 'application/merge-patch+json' }],
    ['PUT', base + '/tags', { csrf: true, body: { owned: 'yes' } }],
    ['POST', base + '/revoke', { csrf: true }], ['POST', base + '/reset', { csrf: true }],
    ['DELETE', base, { csrf: true }],
  ];
  for (const [m, u, o] of tries) {
    const r = await pageFetch(pb, m, u, o);
    check(r.status === 404, 'tenant B ' + m + ' ' + u + ' -> ' + r.status);
  }
  const listB = await pageFetch(pb, 'GET', '/api/v1/devices');
  check(listB.status === 200 && !JSON.stringify(listB.data).includes(devId), 'B\'s list lacks A\'s device');
  await pb.goto(C.url + '/#/devices/' + devId);
  await pb.waitForSelector('h1:text-is("Device not found")');
  const auditB = await pageFetch(pb, 'GET', '/api/v1/audit');
  check(auditB.status === 200 && !JSON.stringify(auditB.data).includes(devId), 'B\'s audit lacks A\'s device');
  step('tenant isolation: B gets 404 for A\'s device');

  // Claim errors, as B (its own throttle): an unknown code, then the limit.
  await pb.click('nav a:text-is("Add device")');
  await pb.waitForSelector('#claim-ident');
  await pb.fill('#claim-ident', 'ZZZZ22');
  await pb.click('form button[type=submit]');
  await pb.waitForSelector('#claim-msg[data-error="expired_code"]');
  check((await pb.textContent('#claim-msg')).includes('not valid'), 'expired code message');
  for (let i = 0; i < 12; i++) {
    const guess = 'ZZZ' + ALPHABET[i] + ALPHABET[i + 1] + ALPHABET[(i * 7) % 31];
    const r = await pageFetch(pb, 'POST', '/api/v1/devices/claim', { csrf: true, body: { code: guess } });
    if (r.status === 429) break;
    check(r.status === 404, 'guess ' + i + ': ' + r.status);
  }
  await pb.fill('#claim-ident', 'ZZZZ33');
  await pb.click('form button[type=submit]');
  await pb.waitForSelector('#claim-msg[data-error="too_many_attempts"]');
  check(/Too many failed attempts[\s\S]*try again in \d+ (minute|second)/i.test(await pb.textContent('#claim-msg')), 'throttle message');
  step('claim messages: expired code and throttling');
  await ctxB.close();
  await expect4xx(null);

  // ---- claim errors as A: unknown serial, contested serial ----
  await page.bringToFront();
  await expect4xx('claim errors');
  await page.click('nav a:text-is("Add device")');
  await page.waitForSelector('#claim-ident');
  await page.fill('#claim-ident', 'NO-SUCH-SERIAL-1');
  await page.waitForSelector('#claim-kind:has-text("serial number")');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-msg[data-error="unknown_serial"]');
  await page.fill('#claim-ident', C.dupSerial);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-msg[data-error="serial_in_use"]');
  check((await page.textContent('#claim-msg')).includes('code shown on the device'), 'serial_in_use asks for the code');
  await page.fill('#claim-ident', code);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-msg[data-error="already_claimed"]');
  await page.fill('#claim-ident', 'bad serial!');
  await page.waitForSelector('#claim-kind:has-text("Not a valid")');
  step('claim messages: unknown serial, serial in use, already claimed, invalid input');
  await expect4xx(null);

  // ---- markup in a device name and a tag is text ----
  await page.fill('#claim-ident', C.xssSerial);
  await page.fill('#claim-name', XSS_NAME);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-result:not([hidden])');
  check((await page.textContent('#claim-result-title')) === XSS_NAME, 'hostile name shown as text');
  await page.waitForSelector('#claim-result .badge[data-status="waiting"]');
  const xssId = (await page.textContent('#claim-result code.id')).trim();
  await page.click('#claim-result a:text-is("Open the device page")');
  await page.waitForSelector('#tags-edit');
  await page.fill('#tags-edit', 'site=berlin\nnote=' + XSS_TAG);
  await page.click('form:has(#tags-edit) button[type=submit]');
  await page.waitForSelector('#tags-view .tag:text-is("note: ' + XSS_TAG + '")');
  check((await page.textContent('#device-title')) === XSS_NAME, 'device page title is the literal name');
  await list.waitForSelector('tr[data-device-id="' + xssId + '"][data-status="waiting"]');
  // Tag changes have no event: the list shows them after it loads again (in-page
  // navigation, no reload).
  await list.evaluate(() => { location.hash = '#/audit'; });
  await list.waitForSelector('h1:text-is("Audit log")');
  await list.evaluate(() => { location.hash = '#/devices'; });
  await list.waitForSelector('tr[data-device-id="' + xssId + '"] .tag:text-is("note: ' + XSS_TAG + '")');
  check((await list.textContent('tr[data-device-id="' + xssId + '"] td.name-cell a')) === XSS_NAME, 'list shows the literal name');
  for (const p of [page, list]) {
    check((await p.locator('main img, main script').count()) === 0, 'no injected element');
  }
  await list.bringToFront();
  await list.fill('#dev-search', 'berlin');
  await list.waitForSelector('#dev-count:has-text("1 of 3")');
  await list.fill('#dev-search', '');
  step('hostile name and tag shown as text');

  // Delete it: the dialog is keyboard accessible (Escape cancels, focus returns).
  await page.bringToFront();
  await page.click('#act-delete');
  await page.waitForSelector('dialog#confirm[open]');
  check((await page.evaluate(() => document.activeElement.id)) === 'confirm-cancel', 'focus on Cancel');
  check((await page.textContent('#confirm-title')) === 'Delete ' + XSS_NAME + '?', 'dialog names the device as text');
  await page.keyboard.press('Escape');
  await page.waitForSelector('dialog#confirm', { state: 'hidden' });
  check((await page.evaluate(() => document.activeElement.id)) === 'act-delete', 'focus back on Delete');
  check((await pageFetch(page, 'GET', '/api/v1/devices/' + xssId)).status === 200, 'not deleted on cancel');
  await page.click('#act-delete');
  await page.click('#confirm-ok');
  await page.waitForSelector('h1:text-is("Devices")');
  await list.waitForSelector('tr[data-device-id="' + xssId + '"]', { state: 'detached' });
  step('delete with confirmation; the row left the other tab live');

  // ---- revoke the agent's device: it goes offline ----
  await page.goto(C.url + '/#/devices/' + devId);
  await page.waitForSelector('#fact-status[data-status="online"]');
  await page.click('#act-revoke');
  await page.waitForSelector('dialog#confirm[open]');
  check((await page.textContent('#confirm-text')).includes('credentials stop working'), 'revoke dialog explains');
  await page.click('#confirm-ok');
  await page.waitForSelector('#fact-status[data-status="revoked"][data-presence="offline"]', { timeout: 15000 });
  await list.waitForSelector('tr[data-device-id="' + devId + '"][data-status="revoked"][data-presence="offline"]', { timeout: 15000 });
  check((await list.evaluate(() => window.__noReload)) === 'still the same page', 'the list tab was never reloaded');
  step('revoked: offline on the device page and in the list');
  // Reset: the serial can be claimed again.
  await page.click('#act-reset');
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('.msg-ok:has-text("was reset: its serial ' + C.agentSerial + ' can be claimed again")');
  step('reset with confirmation');

  // ---- audit log ----
  await page.click('nav a:text-is("Audit log")');
  await page.waitForSelector('#audit-table tbody tr');
  for (const a of ['user.login', 'device.claim', 'device.desired_patch', 'device.tags', 'device.delete', 'device.revoke', 'device.reset']) {
    await page.waitForSelector('#audit-table tr[data-action="' + a + '"]');
  }
  const claimRow = await page.textContent('#audit-table tr[data-action="device.claim"]:has-text("' + devId + '")');
  check(claimRow.includes(C.user) && claimRow.includes(C.agentSerial), 'claim row names who and the serial: ' + claimRow);
  check((await page.textContent('#audit-table tr[data-action="device.revoke"]')).includes(devId), 'revoke row');
  await a11y(page, 'audit');
  await shot(page, 'audit', { clip: { x: 0, y: 0, width: 1280, height: 760 } });
  step('audit log shows claim, change, tags, delete and revoke');

  // ---- phone width ----
  const phone = await ctxA.newPage();
  watch(phone, 'phone');
  await phone.setViewportSize({ width: 360, height: 780 });
  await phone.goto(C.url + '/#/devices');
  await phone.waitForSelector('tr[data-device-id="' + devId + '"]');
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 360, 'no horizontal scrolling at 360 px (' + overflow + ')');
  await a11y(phone, 'devices (phone)');
  await shot(phone, 'devices-phone');
  await phone.goto(C.url + '/#/devices/' + devId);
  await phone.waitForSelector('#device-title');
  check((await phone.evaluate(() => document.documentElement.scrollWidth)) <= 360, 'device page fits 360 px');
  await shot(phone, 'device-phone');
  for (const [hash, sel] of [['#/add', '#claim-ident'], ['#/audit', '#audit-table tbody tr']]) {
    await phone.goto(C.url + '/' + hash);
    await phone.waitForSelector(sel);
    const w = await phone.evaluate(() => document.documentElement.scrollWidth);
    check(w <= 360, hash + ' fits 360 px (' + w + ')');
    await a11y(phone, hash + ' (phone)');
  }
  await phone.close();

  // ---- skip link and logout ----
  await page.focus('#skip');
  await page.keyboard.press('Enter');
  check((await page.evaluate(() => document.activeElement.id)) === 'main', 'skip link focuses main');
  await expect4xx('after logout');
  await page.click('#logout');
  await page.waitForSelector('#tenant');
  await page.waitForSelector('text=You are logged out.');
  const after = await pageFetch(page, 'GET', '/api/v1/session');
  check(after.status === 401, 'session gone after logout: ' + after.status);
  // The other tab's next API call finds the session ended and asks to log in again.
  await list.selectOption('#dev-status', 'online');
  await list.waitForSelector('#tenant');
  await list.waitForSelector('text=Your session has ended');
  check((await list.evaluate(() => window.__noReload)) === 'still the same page', 'no reload on expiry');
  step('logout ok');

  noProblems('end');
  const byKind = {};
  for (const e of apiErrors) {
    const k = e.replace(/dev_[a-z2-7]{26}/g, '{id}').replace(/\?.*$/, '');
    byKind[k] = (byKind[k] || 0) + 1;
  }
  log('expected API 4xx answers Chromium logged:', JSON.stringify(byKind));
  await ctxA.close();
}

main().then(() => {
  console.log('OK ' + ((Date.now() - T0) / 1000).toFixed(1));
  process.exit(0);
}, (err) => {
  console.error('FAIL', err && err.stack ? err.stack : err);
  if (problems.length) console.error('browser problems:\n  ' + problems.join('\n  '));
  process.exit(1);
});
