// The PhyStack console in a real browser: playwright-core drives Debian's Chromium
// (headless, never a downloaded browser) against a hub and an agent on loopback,
// started by tests/integration/test_browser.py, which passes:
//   HUB_URL, TENANT, USER, PASSWORD, TENANT_B, USER_B, PASSWORD_B,
//   AGENT_STATE (the agent's state folder), AGENT_SERIAL, XSS_SERIAL (registered, never
//   picked up), DUP_SERIAL (registered twice), WARN_SERIAL (registered from WARN_SOURCE
//   with the User-Agent WARN_AGENT), PLAIN_SERIAL (registered, claimed while the tenant
//   takes attested serials only), SHOT_DIR, CHROMIUM.
// With MODE=idle it runs only the idle check instead: on a hub with a short
// --session-idle (IDLE_SECONDS), a device page left open, refreshed in the background
// by the device's status reports (IDLE_DEVICE, online), must still reach the login
// page; only HUB_URL, TENANT, USER, PASSWORD, SHOT_DIR and CHROMIUM are needed then.
// Any console error (other than the API's own expected 4xx answers), page error,
// CSP violation (Trusted Types included) or JavaScript dialog fails the run. Every API
// request is recorded with its X-Phy-Background header: refreshes the console makes
// by itself must carry it, requests of user actions must not. Prints "OK <seconds>"
// at the end.
'use strict';

const fs = require('fs');
const path = require('path');
const { chromium, request: apiRequest } = require('playwright-core');

const MODE = process.env.MODE || 'full';
const env = (k, d) => {
  const v = process.env[k] === undefined ? d : process.env[k];
  if (v === undefined) throw new Error('missing env ' + k);
  return v;
};
const full = (k) => env(k, MODE === 'full' ? undefined : '');
const C = {
  url: env('HUB_URL'),
  tenant: env('TENANT'), user: env('USER'), password: env('PASSWORD'),
  tenantB: full('TENANT_B'), userB: full('USER_B'), passwordB: full('PASSWORD_B'),
  agentState: full('AGENT_STATE'), agentSerial: full('AGENT_SERIAL'),
  xssSerial: full('XSS_SERIAL'), dupSerial: full('DUP_SERIAL'),
  warnSerial: full('WARN_SERIAL'), warnSource: full('WARN_SOURCE'), warnAgent: full('WARN_AGENT'),
  plainSerial: full('PLAIN_SERIAL'),
  shots: env('SHOT_DIR'), chromium: env('CHROMIUM', '/usr/bin/chromium'),
  idleDevice: env('IDLE_DEVICE', ''), idleSeconds: Number(env('IDLE_SECONDS', '0')),
};
const XSS_NAME = '<img src=x onerror=alert(1)>';
const XSS_TAG = '<script>alert(4)</script>';
const NEW_PASSWORD = 'correct horse battery staple 42';
const ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
const T0 = Date.now();
const problems = [];
const apiErrors = [];
// Every API request of every page: {label, method, path, bg, at, status} (bg: the
// value of X-Phy-Background or null; at: when it was sent; status: its answer's).
const requests = [];
const recorded = new WeakMap(); // playwright Request -> its entry in requests
// While the test itself provokes a Trusted Types violation (to see they are enforced).
let probing = false;
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
    if (probing && /TrustedHTML|Trusted Type/i.test(text)) return;
    const m = /Failed to load resource: the server responded with a status of (\d+)/.exec(text);
    // 5xx only where the test answers for the hub (page.route) on purpose.
    const top = negative && /^simulated/.test(negative) ? 600 : 500;
    if (m && negative && /\/api\/v1\//.test(where) && Number(m[1]) >= 400 && Number(m[1]) < top) {
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
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(C.url + '/api/v1/')) return;
    const bg = r.headers()['x-phy-background'];
    const q = { label, method: r.method(), path: u.slice(C.url.length), bg: bg === undefined ? null : bg,
      at: Date.now(), status: null };
    recorded.set(r, q);
    requests.push(q);
  });
  page.on('response', (r) => {
    const q = recorded.get(r.request());
    if (q) q.status = r.status();
  });
}

/** The API requests of a tab since mark (an index into requests) whose path matches re. */
function sent(label, mark, re) {
  return requests.slice(mark).filter((q) => q.label === label && (!re || re.test(q.path)));
}

const show = (qs) => JSON.stringify(qs.map((q) => q.method + ' ' + q.path + (q.bg ? ' [bg]' : '')));

/** Runs in every page before its scripts: a CSP violation (a Trusted Types one
 * included) becomes a console error, which fails the run. */
function cspWatch() {
  document.addEventListener('securitypolicyviolation', (e) => {
    if (window.__ttProbe) return;
    console.error('CSP violation: ' + e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
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
    if (MODE === 'idle') await idle(browser);
    else await run(browser);
  } finally {
    await browser.close();
  }
}

/** A page left open is refreshed in the background (the device reports its status
 * every second) and still reaches the login page once --session-idle has passed since
 * the user's last action: background requests do not keep the session alive. */
async function idle(browser) {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctx.setDefaultTimeout(15000);
  await ctx.addInitScript(cspWatch);
  const page = await ctx.newPage();
  watch(page, 'I');
  await page.goto(C.url + '/');
  await page.waitForSelector('#tenant');
  await login(page, C.tenant, C.user, C.password);
  // The last user action: opening the device page.
  const mark = requests.length;
  const t0 = Date.now();
  await page.click('tr[data-device-id="' + C.idleDevice + '"] a');
  await page.waitForSelector('#fact-status[data-status="online"]');
  await page.waitForSelector('#status-history tbody tr');
  await expect4xx('idle');
  await page.waitForSelector('#tenant', { timeout: (C.idleSeconds + 15) * 1000 });
  const ended = Date.now();
  await page.waitForSelector('text=Your session has ended');
  const took = (ended - t0) / 1000;
  await expect4xx(null);
  const bg = sent('I', mark).filter((q) => q.bg === '1');
  const fg = sent('I', mark).filter((q) => q.bg === null && q.path !== '/api/v1/events');
  const served = bg.filter((q) => q.status === 200);
  log('idle: requests since the device page opened:', sent('I', mark).map((q) =>
    ((q.at - t0) / 1000).toFixed(1) + 's ' + q.method + ' ' + q.path.replace(C.idleDevice, '{id}') + (q.bg ? ' [bg]' : '') + ' ' + q.status).join(', '));
  log('idle: login page after', took.toFixed(1), 's;', bg.length, 'background requests meanwhile,',
    served.length, 'answered 200, the last', served.length ? ((served[served.length - 1].at - t0) / 1000).toFixed(1) : '-', 's in');
  check(served.length >= 2 && served.some((q) => /\/status-history$/.test(q.path)),
    'the open page was refreshed in the background meanwhile: ' + show(bg));
  // Had the last of them been a use, the session would have lasted until then + idle
  // (the hub records a use at most every idle/2, so that one must be that late).
  const last = served[served.length - 1].at;
  check(last - t0 >= C.idleSeconds * 500, 'a background request answered 200 after half the idle time: ' + (last - t0) + ' ms');
  check(ended < last + C.idleSeconds * 1000, 'the session ended before ' + (last + C.idleSeconds * 1000 - t0) +
    ' ms (the last background request + --session-idle) but only at ' + (ended - t0) + ' ms');
  check(fg.every((q) => q.path.includes(C.idleDevice + '')) && fg.length <= 2,
    'only opening the page was a use: ' + show(fg));
  check(took >= C.idleSeconds - 1, 'ended after --session-idle, not before: ' + took);
  await shot(page, 'idle-expired');
  step('an open page refreshed in the background still idles out');
  noProblems('end');
  await ctx.close();
}

async function run(browser) {
  const ctxA = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctxA.setDefaultTimeout(15000);
  await ctxA.addInitScript(cspWatch);
  const page = await ctxA.newPage();
  watch(page, 'A');

  // ---- login page, served by the hub under its CSP ----
  const resp = await page.goto(C.url + '/');
  const csp = resp.headers()['content-security-policy'] || '';
  check(/default-src 'none'/.test(csp) && /script-src 'self'/.test(csp) && /style-src 'self'/.test(csp),
    'CSP on / is strict: ' + csp);
  check(/require-trusted-types-for 'script'/.test(csp) && /trusted-types 'none'/.test(csp),
    'CSP on / requires Trusted Types: ' + csp);
  await page.waitForSelector('#tenant');
  // The browser enforces them: an HTML string in a DOM sink is refused (so the run
  // below, free of violations, shows the console never uses one).
  probing = true;
  const tt = await page.evaluate(() => {
    window.__ttProbe = true;
    setTimeout(() => { window.__ttProbe = false; }, 300);
    try {
      document.createElement('div').innerHTML = '<b>markup</b>';
      return 'assigned';
    } catch (e) {
      return e.name;
    }
  });
  await new Promise((r) => setTimeout(r, 500));
  probing = false;
  check(tt === 'TypeError', 'Trusted Types refuse innerHTML: ' + tt);
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
  // The session cookie: __Host- (only this host may set it), HttpOnly, Secure, Strict.
  const cookies = await ctxA.cookies(C.url);
  const sc = cookies.find((c) => c.name === '__Host-phy_session');
  check(sc && sc.httpOnly && sc.secure && sc.sameSite === 'Strict' && sc.path === '/' && /^[A-Za-z0-9_-]{43}$/.test(sc.value),
    'session cookie __Host-phy_session: ' + JSON.stringify(cookies.map((c) => Object.assign({}, c, { value: c.value.length }))));
  check(!cookies.some((c) => c.name === 'phy_session'), 'no cookie of the old name phy_session');
  check(!(await page.evaluate(() => document.cookie)).includes('phy_session'), 'scripts cannot read the session cookie');
  step('logged in as', C.user);

  // ---- a second tab on the devices list: it must follow the claim live ----
  const listMark = requests.length;
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
  const claimMark = requests.length;
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
  // The claim is the user's; following the device afterwards is the page's own doing.
  const claimed = sent('A', claimMark);
  check(claimed[0] && claimed[0].method === 'POST' && claimed[0].path === '/api/v1/devices/claim' && claimed[0].bg === null,
    'the claim is a use of the session: ' + show(claimed));
  const follows = sent('A', claimMark, new RegExp('^/api/v1/devices/' + devId + '$'));
  check(follows.length > 0 && follows.every((q) => q.method === 'GET' && q.bg === '1'),
    'the add page follows the device with background requests: ' + show(follows));

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
  // Opening the page and changing a filter are uses of the session; fetching a row
  // again after its events is not.
  const lists = sent('A-list', listMark, /^\/api\/v1\/(session|devices\?)/);
  check(lists.length >= 3 && lists.every((q) => q.bg === null), 'loads the user asked for are no background: ' + show(lists));
  const rowFetches = sent('A-list', listMark, new RegExp('^/api/v1/devices/' + devId + '$'));
  check(rowFetches.length > 0 && rowFetches.every((q) => q.bg === '1'),
    'row refetches after events are background: ' + show(rowFetches));
  step('devices list: live row, search and status filter ok');

  // ---- device page: twin, desired editor, status history ----
  await page.bringToFront(); // a background tab's animation frames are throttled
  const pageMark = requests.length;
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
  // Opening the page and the patch are uses of the session; the reloads after the
  // device's status and twin events are background requests.
  const devPath = new RegExp('^/api/v1/devices/' + devId + '$');
  const histPath = new RegExp('^/api/v1/devices/' + devId + '/status-history$');
  await until(() => sent('A', pageMark, histPath).some((q) => q.bg === '1'), 'a status history reload after a status event');
  await until(() => sent('A', pageMark, devPath).some((q) => q.bg === '1'), 'a device reload after a twin event');
  const firstDev = sent('A', pageMark, devPath)[0];
  const firstHist = sent('A', pageMark, histPath)[0];
  check(firstDev.bg === null && firstHist.bg === null, 'opening the device page is a use: ' + show([firstDev, firstHist]));
  const patches = sent('A', pageMark, /\/twin\/desired$/);
  check(patches.length === 1 && patches[0].method === 'PATCH' && patches[0].bg === null, 'the patch is a use: ' + show(patches));
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

  // ---- rename on the device page: the list in the other tab follows live ----
  const rowName = 'tr[data-device-id="' + devId + '"] td.name-cell a';
  const renameMark = requests.length;
  check((await page.inputValue('#rename-input')) === 'Lobby display', 'the rename field holds the name');
  // Over 64 bytes of UTF-8 (33 × "ö" is 66): refused before anything is sent.
  await page.fill('#rename-input', 'ö'.repeat(33));
  await page.waitForSelector('#rename-error:has-text("66 bytes")');
  check((await page.getAttribute('#rename-input', 'aria-invalid')) === 'true', 'a 66-byte name is marked invalid');
  await page.click('#rename-save');
  await page.waitForSelector('#rename-msg[data-error="name"]');
  check((await page.textContent('#rename-msg')).includes('at most 64'), 'the message names the limit');
  await a11y(page, 'device (rename refused)');
  // A new name (trimmed, markup as text): the page and the other tab's row follow.
  await page.fill('#rename-input', '  Front desk <img src=x onerror=alert(6)>  ');
  check((await page.textContent('#rename-error')) === '' && (await page.getAttribute('#rename-input', 'aria-invalid')) === 'false',
    'the new name is fine');
  const newName = 'Front desk <img src=x onerror=alert(6)>';
  await page.click('#rename-save');
  await page.waitForSelector('#rename-msg.msg-ok:has-text("Renamed to")');
  check((await page.textContent('#rename-msg')) === 'Renamed to ' + newName + '.', 'rename confirmed: ' + await page.textContent('#rename-msg'));
  check((await page.textContent('#device-title')) === newName, 'the page title is the new name');
  check((await page.textContent('#fact-name')) === newName, 'the Name fact is the new name');
  check((await page.title()).startsWith(newName), 'the document title follows: ' + await page.title());
  await list.waitForSelector(rowName + ':text-is("' + newName + '")');
  check((await list.evaluate(() => window.__noReload)) === 'still the same page', 'the list tab was not reloaded for the rename');
  for (const p of [page, list]) check((await p.locator('main img, main script').count()) === 0, 'the renamed device injects nothing');
  const renames = sent('A', renameMark, devPath).filter((q) => q.method === 'PATCH');
  check(renames.length === 1 && renames[0].bg === null && renames[0].status === 200, 'one rename sent, a use of the session: ' + show(renames));
  // An empty name removes it: the serial stands in.
  await page.fill('#rename-input', '');
  await page.click('#rename-save');
  await page.waitForSelector('#rename-msg:has-text("Name removed")');
  await page.waitForSelector('#device-title:text-is("' + C.agentSerial + '")');
  await list.waitForSelector(rowName + ':text-is("' + C.agentSerial + '")');
  check((await list.textContent('tr[data-device-id="' + devId + '"] td.name-cell')).includes('no name'), 'the row says it has no name');
  // Renamed elsewhere (here: by a request of the list tab): the device page follows the
  // `name` event without reloading the device.
  const liveMark = requests.length;
  const elsewhere = await pageFetch(list, 'PATCH', '/api/v1/devices/' + devId, { csrf: true, body: { name: 'Lobby display' } });
  check(elsewhere.status === 200 && elsewhere.data.name === 'Lobby display', 'rename from the other tab ' + JSON.stringify(elsewhere));
  await page.waitForSelector('#device-title:text-is("Lobby display")');
  check((await page.inputValue('#rename-input')) === 'Lobby display', 'the rename field follows the event');
  await list.waitForSelector(rowName + ':text-is("Lobby display")');
  // (GET /api/v1/session is pageFetch's own, for the CSRF token of its PATCH.)
  const listAfter = sent('A-list', renameMark).filter((q) => q.method === 'GET' &&
    q.path !== '/api/v1/events' && q.path !== '/api/v1/session');
  check(listAfter.every((q) => q.bg === '1'), 'the list tab followed the renames without a load of its own: ' + show(listAfter));
  check(sent('A', liveMark, devPath).every((q) => q.bg === '1'), 'the device page followed in the background: ' + show(sent('A', liveMark, devPath)));
  step('rename: over 64 bytes refused, renamed, name removed, renamed elsewhere; the other tab followed live');

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
  check((await page.getAttribute('#claim-msg', 'data-checked')) === 'registrations', 'no registration: said before claiming');
  await page.fill('#claim-ident', C.dupSerial);
  await page.click('form button[type=submit]');
  // Two registrations of an unattested serial: both listed before anything is claimed.
  await page.waitForSelector('#claim-warning:not([hidden]) #claim-registrations');
  check((await page.locator('#claim-registrations tbody tr').count()) === 2, 'both registrations of the duplicate serial listed');
  check((await page.textContent('#claim-warning')).includes('More than one device registered this serial'), 'the warning says the claim will be refused');
  await page.click('#claim-anyway');
  await page.waitForSelector('#claim-msg[data-error="serial_in_use"]');
  check(await page.isHidden('#claim-warning'), 'the warning is gone after the claim');
  check((await page.textContent('#claim-msg')).includes('code shown on the device'), 'serial_in_use asks for the code');
  // The code again, by the same user within 10 minutes: the hub answers 200 with the
  // device that claim created (a retry), shown like a new claim with a note.
  await page.fill('#claim-ident', code);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-result:not([hidden]) #claim-repeated');
  check((await page.textContent('#claim-result code.id')).trim() === devId, 'the retried claim shows the same device');
  await page.click('#claim-result button:text-is("Add another device")');
  await page.waitForSelector('#claim-ident');
  await page.fill('#claim-ident', 'bad serial!');
  await page.waitForSelector('#claim-kind:has-text("Not a valid")');
  // The name limit is 64 bytes of UTF-8 (the hub's), not 64 characters: 33 × "ä" is
  // 33 characters but 66 bytes, refused before anything is sent; 32 × "ä" fits.
  const nameMark = requests.length;
  await page.fill('#claim-ident', C.dupSerial);
  await page.fill('#claim-name', 'ä'.repeat(33));
  await page.waitForSelector('#claim-name-msg:has-text("66 bytes")');
  check((await page.getAttribute('#claim-name', 'aria-invalid')) === 'true', 'a 66-byte name is marked invalid');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-msg[data-error="name"]');
  check((await page.textContent('#claim-msg')).includes('at most 64'), 'the message names the limit');
  check(sent('A', nameMark, /\/claim$/).length === 0, 'nothing sent for a name over 64 bytes');
  await page.fill('#claim-name', 'ä'.repeat(32));
  check((await page.textContent('#claim-name-msg')) === '' && (await page.getAttribute('#claim-name', 'aria-invalid')) === 'false',
    'a 64-byte name is fine');
  await page.fill('#claim-name', '');
  step('claim messages: unknown serial, serial in use, a retried claim (200), invalid input, name over 64 bytes');
  await expect4xx(null);

  // ---- markup in a device name and a tag is text ----
  await page.fill('#claim-ident', C.xssSerial);
  await page.fill('#claim-name', XSS_NAME);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-warning:not([hidden]) #claim-registrations tbody tr');
  check((await page.textContent('#claim-registrations td[data-label="Agent"]')) === 'not given', 'no agent given: said so');
  await page.click('#claim-anyway');
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

  // ---- a claim by serial of an unattested serial: who registered it, first ----
  // The tenant claims any serial ("any"): before the claim the console shows what the
  // claim would hand the credentials to (when, from where, which agent) and claims
  // only after "Claim anyway".
  let mark = requests.length;
  await page.click('nav a:text-is("Add device")');
  await page.waitForSelector('#claim-ident');
  await page.fill('#claim-ident', C.warnSerial);
  await page.fill('#claim-name', 'Shelf sensor');
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-warning:not([hidden]) #claim-registrations tbody tr');
  const warnText = await page.textContent('#claim-warning');
  check((await page.textContent('#claim-registrations .reg-source')) === C.warnSource, 'the source address: ' + warnText);
  check((await page.textContent('#claim-registrations .reg-agent')) === C.warnAgent, 'the agent: ' + warnText);
  check((await page.textContent('#claim-registrations td[data-label="Proven"]')).startsWith('no'), 'not proven');
  check(/anyone who knows the serial/.test(warnText) && /code shown on the device's screen is the safe way/.test(warnText),
    'the warning explains the risk and the safe way: ' + warnText);
  check((await page.locator('#claim-registrations td[data-label="First seen"] time').count()) === 1, 'first seen is a time');
  check((await page.evaluate(() => document.activeElement.id)) === 'claim-warning-title', 'focus on the warning');
  check(await page.isHidden('form button[type=submit]'), 'the ordinary claim button is away while the warning shows');
  const checks = sent('A', mark, /^\/api\/v1\/(tenant|registrations|devices\/claim)/);
  check(checks.length === 2 && checks[0].path === '/api/v1/tenant' && checks[1].path === '/api/v1/registrations?serial=' + C.warnSerial &&
    checks.every((q) => q.method === 'GET' && q.bg === null), 'the policy and the registrations asked, nothing claimed yet: ' + show(checks));
  await a11y(page, 'claim warning');
  await shot(page, 'claim-warning', { fullPage: true });
  await page.setViewportSize({ width: 360, height: 780 });
  await page.evaluate(() => document.getElementById('claim-warning').scrollIntoView());
  const warnW = await page.evaluate(() => document.documentElement.scrollWidth);
  check(warnW <= 360, 'the warning fits 360 px (' + warnW + ')');
  await a11y(page, 'claim warning (phone)');
  await shot(page, 'claim-warning-phone', { fullPage: true });
  await page.setViewportSize({ width: 1280, height: 860 });
  // "Enter the code instead" backs out: nothing claimed.
  await page.click('#claim-use-code');
  await page.waitForSelector('#claim-warning', { state: 'hidden' });
  check((await page.evaluate(() => document.activeElement.id)) === 'claim-ident' && (await page.inputValue('#claim-ident')) === '',
    'back to an empty serial-or-code field');
  // Again; the policy is not asked a second time on this page. "Claim anyway" claims.
  mark = requests.length;
  await page.fill('#claim-ident', C.warnSerial);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-warning:not([hidden]) #claim-anyway');
  await page.click('#claim-anyway');
  await page.waitForSelector('#claim-result:not([hidden])');
  await page.waitForSelector('#claim-result .badge[data-status="waiting"]');
  check((await page.textContent('#claim-result')).includes(C.warnSerial), 'claimed by serial: ' + await page.textContent('#claim-result'));
  const anyway = sent('A', mark, /^\/api\/v1\/(tenant|registrations|devices\/claim)/);
  check(anyway.length === 2 && anyway[0].path.startsWith('/api/v1/registrations?') &&
    anyway[1].method === 'POST' && anyway[1].path === '/api/v1/devices/claim' && anyway[1].status === 201,
    'registrations again, then one claim: ' + show(anyway));
  step('claim by serial: the registration (source, agent) shown first, claimed after "Claim anyway"');

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

  // ---- settings: claims by serial, API tokens, password ----
  await page.click('nav a:text-is("Settings")');
  await page.waitForSelector('h1:text-is("Settings")');
  check((await page.getAttribute('nav a[data-nav="settings"]', 'aria-current')) === 'page', 'Settings is the current page');
  await page.waitForSelector('#policy-current[data-policy="any"]');
  await page.waitForSelector('#tokens-table tbody tr');
  check(await page.isChecked('#policy-any') && !(await page.isChecked('#policy-attested')), 'the policy any is selected');
  check(await page.isDisabled('#policy-save'), 'nothing to save yet');
  await a11y(page, 'settings');
  await shot(page, 'settings', { fullPage: true });
  // Attested serials only: saved at once (no dialog).
  await page.check('#policy-attested');
  await page.click('#policy-save');
  await page.waitForSelector('#policy-msg.msg-ok');
  await page.waitForSelector('#policy-current[data-policy="attested"]');
  check((await pageFetch(page, 'GET', '/api/v1/tenant')).data.serial_claims === 'attested', 'the hub has attested');
  // Now a claim by serial of an unattested serial needs the code; the policy makes the
  // page claim straight away, without asking for registrations.
  await page.click('nav a:text-is("Add device")');
  await page.waitForSelector('#claim-ident');
  mark = requests.length;
  await expect4xx('code required');
  await page.fill('#claim-ident', C.plainSerial);
  await page.click('form button[type=submit]');
  await page.waitForSelector('#claim-msg[data-error="code_required"]');
  check((await page.textContent('#claim-msg')).includes('code shown on the device\'s screen'), 'code_required asks for the code');
  await expect4xx(null);
  check(sent('A', mark, /^\/api\/v1\/registrations/).length === 0, 'no registrations asked under attested');
  // Back to any serial: only through the dialog with its warning; Cancel keeps attested.
  await page.click('nav a:text-is("Settings")');
  await page.waitForSelector('#policy-current[data-policy="attested"]');
  mark = requests.length;
  await page.check('#policy-any');
  await page.click('#policy-save');
  await page.waitForSelector('dialog#confirm[open]');
  check((await page.textContent('#confirm-text')).includes('credentials go to whoever registered it first'), 'the dialog warns');
  await page.click('#confirm-cancel');
  await page.waitForSelector('dialog#confirm', { state: 'hidden' });
  check(sent('A', mark, /^\/api\/v1\/tenant$/).every((q) => q.method === 'GET'), 'nothing saved on Cancel');
  check((await page.getAttribute('#policy-current', 'data-policy')) === 'attested', 'still attested');
  await page.click('#policy-save');
  await page.waitForSelector('dialog#confirm[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('#policy-current[data-policy="any"]');
  check((await page.textContent('#policy-msg')).includes('any serial'), 'saved: ' + await page.textContent('#policy-msg'));
  check((await pageFetch(page, 'GET', '/api/v1/tenant')).data.serial_claims === 'any', 'the hub has any again');
  step('settings: claims by serial switched to attested (code required) and back through the dialog');

  // API tokens: an invalid number of days is refused before sending; a new token is
  // shown once, works, is listed and is revoked through the dialog.
  mark = requests.length;
  const tokensBefore = await page.locator('#tokens-table tbody tr').count();
  await page.fill('#token-days', '0');
  await page.click('#token-create');
  await page.waitForSelector('#token-create-msg[data-error="days"]');
  check(sent('A', mark, /^\/api\/v1\/tokens$/).every((q) => q.method === 'GET'), 'nothing sent for 0 days');
  await page.fill('#token-days', '30');
  await page.click('#token-create');
  await page.waitForSelector('#token-new:not([hidden])');
  const newTokenTitle = await page.textContent('#token-new h3');
  const tokenId = newTokenTitle.replace('New token ', '').trim();
  check(/^[0-9a-f]{12}$/.test(tokenId), 'the new token ID: ' + newTokenTitle);
  const tokenValue = await page.inputValue('#token-new input[readonly]');
  check(tokenValue.length >= 32 && !/\s/.test(tokenValue), 'the token is shown: ' + tokenValue.length + ' characters');
  check((await page.textContent('#token-new-warning')).includes('will not be shown again'), 'shown once, and said so');
  await page.waitForSelector('#tokens-table tr[data-token-id="' + tokenId + '"]');
  check((await page.locator('#tokens-table tbody tr').count()) === tokensBefore + 1, 'one more token listed');
  check((await page.textContent('#tokens-table tr[data-token-id="' + tokenId + '"] td[data-label="User"]')) === C.user, 'listed as the user\'s');
  check(!(await page.textContent('#tokens-table')).includes(tokenValue), 'the list never shows a token itself');
  await page.click('#token-copy');
  const copied = await until(async () => {
    const t = await page.textContent('#token-copy-msg');
    return /^(Copied|The browser did not allow)/.test(t) && t;
  }, 'the copy result');
  log('copy:', copied);
  const bearer = await apiRequest.newContext({ baseURL: C.url, ignoreHTTPSErrors: true });
  const withToken = () => bearer.get('/api/v1/devices', { headers: { Authorization: 'Bearer ' + tokenValue } }).then((r) => r.status());
  check((await withToken()) === 200, 'the new token works');
  await a11y(page, 'settings (new token)');
  await page.click('#tokens-table tr[data-token-id="' + tokenId + '"] button[data-revoke]');
  await page.waitForSelector('dialog#confirm[open]');
  check((await page.textContent('#confirm-title')).includes(tokenId), 'the dialog names the token');
  await page.click('#confirm-ok');
  await page.waitForSelector('#tokens-table tr[data-token-id="' + tokenId + '"]', { state: 'detached' });
  await page.waitForSelector('#tokens-msg.msg-ok:has-text("was revoked")');
  check((await withToken()) === 401, 'the revoked token no longer works');
  await bearer.dispose();
  const tokenCalls = sent('A', mark, /^\/api\/v1\/tokens/).filter((q) => q.method !== 'GET');
  check(tokenCalls.length === 2 && tokenCalls[0].method === 'POST' && tokenCalls[0].status === 201 &&
    tokenCalls[1].method === 'DELETE' && tokenCalls[1].status === 204, 'one create, one revoke: ' + show(tokenCalls));
  step('API token created (shown once), used, listed and revoked');

  // Password: checked before sending (too short, not repeated alike); a wrong current
  // password is refused without ending the session; the new one logs in (the old one
  // no longer does); then it is changed back for the steps that follow.
  mark = requests.length;
  await page.fill('#pw-current', C.password);
  await page.fill('#pw-new', 'short');
  await page.fill('#pw-repeat', 'short');
  await page.click('#pw-save');
  await page.waitForSelector('#pw-msg[data-error="short"]');
  await page.fill('#pw-new', NEW_PASSWORD);
  await page.fill('#pw-repeat', NEW_PASSWORD + 'x');
  await page.click('#pw-save');
  await page.waitForSelector('#pw-msg[data-error="mismatch"]');
  check(sent('A', mark, /^\/api\/v1\/password$/).length === 0, 'nothing sent for a short or unrepeated password');
  await expect4xx('wrong current password');
  await page.fill('#pw-current', 'not the password at all');
  await page.fill('#pw-repeat', NEW_PASSWORD);
  await page.click('#pw-save');
  await page.waitForSelector('#pw-msg[data-error="invalid_login"]');
  check((await page.textContent('#pw-msg')).includes('current password is not right'), 'wrong current password explained');
  await expect4xx(null);
  check((await page.locator('h1:text-is("Settings")').count()) === 1 && (await pageFetch(page, 'GET', '/api/v1/session')).status === 200,
    'a wrong current password does not end the session');
  await a11y(page, 'settings (wrong password)');
  await page.fill('#pw-current', C.password);
  await page.fill('#pw-new', NEW_PASSWORD);
  await page.fill('#pw-repeat', NEW_PASSWORD);
  await page.click('#pw-save');
  await page.waitForSelector('#pw-msg.msg-ok');
  check((await page.inputValue('#pw-current')) === '' && (await page.inputValue('#pw-new')) === '', 'the fields are emptied');
  check((await pageFetch(page, 'GET', '/api/v1/session')).status === 200, 'this session stays');
  const ctxD = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctxD.setDefaultTimeout(15000);
  await ctxD.addInitScript(cspWatch);
  const pd = await ctxD.newPage();
  watch(pd, 'D');
  await pd.goto(C.url + '/');
  await pd.waitForSelector('#tenant');
  await expect4xx('old password');
  await pd.fill('#tenant', C.tenant);
  await pd.fill('#user', C.user);
  await pd.fill('#password', C.password);
  await pd.click('form button[type=submit]');
  await pd.waitForSelector('#login-msg:has-text("not right")');
  await expect4xx(null);
  await login(pd, C.tenant, C.user, NEW_PASSWORD);
  await ctxD.close();
  await page.fill('#pw-current', NEW_PASSWORD);
  await page.fill('#pw-new', C.password);
  await page.fill('#pw-repeat', C.password);
  await page.click('#pw-save');
  await page.waitForSelector('#pw-msg.msg-ok');
  const pws = sent('A', mark, /^\/api\/v1\/password$/);
  check(pws.length === 3 && pws.every((q) => q.method === 'POST' && q.bg === null) &&
    pws.map((q) => q.status).join() === '401,204,204', 'password: 401, then changed and changed back: ' + show(pws));
  step('password: refused when wrong, changed, the new one logs in, changed back');

  // ---- audit log ----
  await page.click('nav a:text-is("Audit log")');
  await page.waitForSelector('#audit-table tbody tr');
  for (const a of ['user.login', 'device.claim', 'device.desired_patch', 'device.rename', 'device.tags', 'device.delete', 'device.revoke', 'device.reset',
    'tenant.settings', 'token.create', 'token.revoke', 'user.password']) {
    await page.waitForSelector('#audit-table tr[data-action="' + a + '"]');
  }
  const claimRow = await page.textContent('#audit-table tr[data-action="device.claim"]:has-text("' + devId + '")');
  check(claimRow.includes(C.user) && claimRow.includes(C.agentSerial), 'claim row names who and the serial: ' + claimRow);
  check((await page.textContent('#audit-table tr[data-action="device.revoke"]')).includes(devId), 'revoke row');
  const auditText = async (sel) => (await page.locator(sel).allTextContents()).join(' | ');
  const settingsRows = await auditText('#audit-table tr[data-action="tenant.settings"]');
  check(settingsRows.includes('Set claims by serial number to any serial') && settingsRows.includes('attested serials only'),
    'policy changes described: ' + settingsRows);
  check((await auditText('#audit-table tr[data-action="token.revoke"]')).includes('ID ' + tokenId), 'token revoke row names the ID');
  const createRows = await auditText('#audit-table tr[data-action="token.create"]');
  check(createRows.includes('ID ' + tokenId + ', valid for 30 days'), 'token create row: ' + createRows);
  const adminRow = await auditText('#audit-table tr[data-action="token.create"]:has(td[data-label="Who"]:has-text("Administrator"))');
  check(adminRow.includes('Created an API token for ' + C.user), 'the administrator\'s (command line) token for the user: ' + createRows);
  check((await page.locator('#audit-table tr[data-action="user.password"]').count()) === 2 &&
    (await auditText('#audit-table tr[data-action="user.password"]')).includes('Changed their password'), 'two password changes');
  await a11y(page, 'audit');
  await shot(page, 'audit', { clip: { x: 0, y: 0, width: 1280, height: 760 } });
  check((await page.textContent('#audit-table tr[data-action="device.rename"]')).includes('Lobby display'), 'the newest rename row names the name');
  step('audit log shows claim, change, rename, tags, delete and revoke');

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
  for (const [hash, sel] of [['#/add', '#claim-ident'], ['#/audit', '#audit-table tbody tr'],
    ['#/settings', '#tokens-table tbody tr']]) {
    await phone.goto(C.url + '/' + hash);
    await phone.waitForSelector(sel);
    const w = await phone.evaluate(() => document.documentElement.scrollWidth);
    check(w <= 360, hash + ' fits 360 px (' + w + ')');
    await a11y(phone, hash + ' (phone)');
  }
  await phone.waitForSelector('#policy-current[data-policy="any"]');
  await shot(phone, 'settings-phone', { fullPage: true });
  await phone.close();

  // ---- malformed and unknown fragments: a clear message, no request, no error ----
  mark = requests.length;
  for (const [hash, title, shown] of [
    ['#/devices/%E0', 'No such device', '%E0'],                  // not UTF-8: decodeURIComponent throws
    ['#/devices/<script>', 'No such device', '<script>'],
    ['#/devices/<img src=x onerror=alert(5)>', 'No such device', '<img src=x onerror=alert(5)>'],
    ['#/devices/DEV_AAAAAAAAAAAAAAAAAAAAAAAAAA', 'No such device', 'DEV_AAAA'],
    ['#/devices/' + devId + '/extra', 'No such page', devId + '/extra'],
    ['#/nowhere%', 'No such page', 'nowhere%'],
  ]) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForSelector('h1:text-is("' + title + '")');
    check((await page.textContent('#notfound-msg')).includes(shown), hash + ' named as text: ' + await page.textContent('#notfound-msg'));
    check((await page.locator('main img, main script').count()) === 0, hash + ': no injected element');
  }
  await a11y(page, 'no such device');
  check(sent('A', mark).length === 0, 'malformed fragments cause no request: ' + show(sent('A', mark)));
  // Straight from the address bar (a new document): the same message.
  await page.goto(C.url + '/#/devices/%E0%A4');
  await page.waitForSelector('h1:text-is("No such device")');
  await page.click('main a:text-is("Go to the devices")');
  await page.waitForSelector('tr[data-device-id="' + devId + '"]');
  await page.waitForSelector('#live-state.on');
  step('malformed fragments: "No such device/page", no request');

  // ---- one browser, two tabs: a logout and a login in one reach the other ----
  // The session cookie is shared: when tab 2 logs out and in again, tab 1's event
  // stream ends (logout ends it) and reconnects with the new session. Tab 1 first checks
  // the session (in the background): as another tenant it leaves the old tenant's page
  // for the new one's devices with a notice; as the same user it takes the new CSRF
  // token and reloads in the background.
  const ctxC = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
  ctxC.setDefaultTimeout(15000);
  await ctxC.addInitScript(cspWatch);
  const t1 = await ctxC.newPage();
  watch(t1, 'C1');
  await t1.goto(C.url + '/');
  await t1.waitForSelector('#tenant');
  await login(t1, C.tenant, C.user, C.password);
  await t1.click('tr[data-device-id="' + devId + '"] a');
  await t1.waitForSelector('#device-title:text-is("Lobby display")');
  await t1.evaluate(() => { window.__noReload = 'same document'; });
  const t2 = await ctxC.newPage();
  watch(t2, 'C2');
  await t2.goto(C.url + '/#/devices');
  await t2.waitForSelector('tr[data-device-id="' + devId + '"]');
  await t2.waitForSelector('#live-state.on');
  const relogin = (tenant, user, password) => t2.evaluate(async ([tenant, user, password]) => {
    const s = await fetch('/api/v1/session').then((r) => r.json());
    const out = await fetch('/api/v1/logout', { method: 'POST', headers: { 'X-CSRF-Token': s.csrf_token } });
    const inn = await fetch('/api/v1/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ tenant, user, password }) });
    return out.status + ' ' + inn.status;
  }, [tenant, user, password]);

  // Another tenant: tab 1 leaves A's device page for B's devices, with a notice.
  await t1.bringToFront();
  mark = requests.length;
  check((await relogin(C.tenantB, C.userB, C.passwordB)) === '204 200', 'logout and login as B in tab 2');
  await t1.waitForSelector('#banner[data-kind="identity-changed"]', { timeout: 20000 });
  await t1.waitForSelector('h1:text-is("Devices")');
  await t1.waitForSelector('text=No devices yet.');
  check((await t1.textContent('#who')).startsWith(C.userB + ' @ ' + C.tenantB), 'tab 1 shows B: ' + await t1.textContent('#who'));
  check((await t1.evaluate(() => location.hash)) === '#/devices', 'tab 1 is on the devices page');
  const noticeText = await t1.textContent('#banner');
  check(noticeText.includes(C.userB + ' of ' + C.tenantB) && noticeText.includes(C.user + ' of ' + C.tenant), 'the notice names both: ' + noticeText);
  const mainText = await t1.textContent('main');
  check(!mainText.includes('Lobby display') && !mainText.includes(devId), 'nothing of A is left in tab 1');
  const switched = sent('C1', mark).filter((q) => q.path !== '/api/v1/events');
  check(switched[0] && switched[0].path === '/api/v1/session' && switched[0].bg === '1', 'the session is checked first, in the background: ' + show(switched));
  check(!switched.some((q) => q.path.includes(devId)), 'no request for A\'s device after the switch: ' + show(switched));
  check((await t1.evaluate(() => window.__noReload)) === 'same document', 'tab 1 switched without a reload');
  await t2.waitForSelector('#banner[data-kind="identity-changed"]', { timeout: 20000 });
  await a11y(t1, 'devices after a login as someone else');
  await shot(t1, 'identity-changed');
  step('a login as another tenant in tab 2: tab 1 shows that tenant\'s devices with a notice');

  // The same user again: tab 1 checks the session, takes the new CSRF token and
  // reloads its list, all in the background.
  mark = requests.length;
  check((await relogin(C.tenantB, C.userB, C.passwordB)) === '204 200', 'logout and login as B again in tab 2');
  await until(() => sent('C1', mark, /^\/api\/v1\/devices\?/).length > 0, 'tab 1 reloading its list after the reconnect', 20000);
  const resynced = sent('C1', mark).filter((q) => q.path !== '/api/v1/events');
  check(resynced[0].path === '/api/v1/session' && resynced.every((q) => q.method === 'GET' && q.bg === '1'),
    'resync: session check, then reload, all background: ' + show(resynced));
  check((await t1.textContent('#who')).startsWith(C.userB + ' @ ' + C.tenantB), 'still B');
  step('a new login of the same user: tab 1 resyncs in the background');

  // Logout fails (the hub answers 503): tab 1 says so, stays logged in, offers a retry.
  await expect4xx('simulated logout failure');
  await t1.route('**/api/v1/logout', (route) => route.fulfill({ status: 503, contentType: 'application/json',
    body: JSON.stringify({ error: 'unavailable', message: 'storage unavailable' }) }));
  mark = requests.length;
  await t1.click('#logout');
  await t1.waitForSelector('#banner[data-kind="logout-failed"]');
  const failText = await t1.textContent('#banner');
  check(/Logging out failed/.test(failText) && /still logged in/.test(failText) && /busy or its storage is unavailable/.test(failText),
    'logout failure explained: ' + failText);
  check((await t1.evaluate(() => document.activeElement.id)) === 'logout-retry', 'focus on the retry button');
  check((await t1.textContent('#who')).startsWith(C.userB + ' @ ' + C.tenantB), 'still shown as logged in');
  check((await t1.locator('#tenant').count()) === 0 && !(await t1.isHidden('#nav')), 'no login page after a failed logout');
  await a11y(t1, 'logout failed');
  await shot(t1, 'logout-failed');
  await t1.unroute('**/api/v1/logout');
  await expect4xx(null);
  // The retry works, with the CSRF token of the newest login (taken at the resync).
  await expect4xx('logout (two tabs)');
  await t1.click('#logout-retry');
  await t1.waitForSelector('text=You are logged out.');
  check(await t1.isHidden('#banner'), 'the failure notice is gone');
  const outs = sent('C1', mark, /^\/api\/v1\/logout$/);
  check(outs.length === 2 && outs.every((q) => q.method === 'POST' && q.bg === null), 'two logouts, both uses: ' + show(outs));
  check((await pageFetch(t1, 'GET', '/api/v1/session')).status === 401, 'session gone after the retried logout');
  // Tab 2 follows by itself: its stream ended with the session and cannot reconnect.
  await t2.waitForSelector('#tenant', { timeout: 20000 });
  await t2.waitForSelector('text=Your session has ended');
  await expect4xx(null);
  await ctxC.close();
  step('logout failure shown with a retry; the other tab follows a logout by itself');

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
  // Only GETs may be background, and each that is carries exactly "1".
  const badBg = requests.filter((q) => q.bg !== null && (q.method !== 'GET' || q.bg !== '1'));
  check(badBg.length === 0, 'background requests are GETs: ' + show(badBg));
  check(!requests.some((q) => /\/(login|logout|events)$/.test(q.path) && q.bg !== null), 'login, logout and streams are never marked');
  const nbg = requests.filter((q) => q.bg === '1').length;
  log('API requests:', requests.length, 'of them background:', nbg);
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
