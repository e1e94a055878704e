// PhyStack console: hash routing (#/login, #/devices, #/add, #/devices/<id>, #/audit),
// session restore, the header, the confirmation dialog and the announcement region.
// No framework, no build step; every file is served by the hub under its CSP.

import { api, get, session, setSession, onExpired } from './client.js';
import { refreshTimes } from './dom.js';
import * as live from './live.js';
import * as loginView from './view-login.js';
import * as devicesView from './view-devices.js';
import * as addView from './view-add.js';
import * as deviceView from './view-device.js';
import * as auditView from './view-audit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const account = document.getElementById('account');
const who = document.getElementById('who');
const announcer = document.getElementById('announce');
let cleanup = null;
let announceTimer = null;
let afterLogin = '#/devices';
let loginNotice = '';

// Whether this browser may hold a session cookie (the cookie itself is HttpOnly). A
// first visit then shows the login page without asking the hub, so the browser
// console stays free of an expected 401.
const HINT = 'phystack.session';
function hint(on) {
  try {
    if (on) localStorage.setItem(HINT, '1');
    else localStorage.removeItem(HINT);
  } catch (e) { /* storage may be off: always ask the hub */ }
}
function hinted() {
  try {
    return localStorage.getItem(HINT) !== null;
  } catch (e) {
    return true;
  }
}

/** Polite announcement for screen readers, also shown for a few seconds. */
function announce(text) {
  announcer.textContent = text;
  if (announceTimer) clearTimeout(announceTimer);
  announceTimer = setTimeout(() => { announcer.textContent = ''; }, 6000);
}

// ---- confirmation dialog (a real <dialog>: focus is trapped, Escape cancels) ----
const dialog = document.getElementById('confirm');
const dialogTitle = document.getElementById('confirm-title');
const dialogText = document.getElementById('confirm-text');
const dialogOk = document.getElementById('confirm-ok');
const dialogCancel = document.getElementById('confirm-cancel');
let dialogResolve = null;

function confirmAction({ title, text, ok }) {
  return new Promise((resolve) => {
    dialogTitle.textContent = title;
    dialogText.textContent = text;
    dialogOk.textContent = ok;
    dialogResolve = resolve;
    dialog.returnValue = '';
    dialog.showModal();
    dialogCancel.focus();
  });
}
dialogOk.addEventListener('click', () => dialog.close('ok'));
dialogCancel.addEventListener('click', () => dialog.close('cancel'));
dialog.addEventListener('close', () => {
  const r = dialogResolve;
  dialogResolve = null;
  if (r) r(dialog.returnValue === 'ok');
});

// ---- routing ----
function parseRoute() {
  const hash = location.hash || '';
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'login') return { name: 'login' };
  if (parts[0] === 'add') return { name: 'add' };
  if (parts[0] === 'audit') return { name: 'audit' };
  if (parts[0] === 'devices' && parts[1]) return { name: 'device', id: parts[1] };
  if (parts[0] === 'devices') return { name: 'devices' };
  return null;
}

const views = { login: loginView, devices: devicesView, add: addView, device: deviceView, audit: auditView };
const titles = { login: 'Log in', devices: 'Devices', add: 'Add device', device: 'Device', audit: 'Audit log' };

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

const ctx = {
  announce,
  confirm: confirmAction,
  go,
  setTitle(t) { document.title = t + ' · PhyStack console'; },
  loggedIn(s) {
    setSession(s);
    hint(true);
    showAccount();
    live.start(document.getElementById('live-state'), expired);
    const target = afterLogin;
    afterLogin = '#/devices';
    go(target);
  },
  takeLoginNotice() {
    const n = loginNotice;
    loginNotice = '';
    return n;
  },
};

function showAccount() {
  const s = session();
  const on = !!s;
  nav.hidden = !on;
  account.hidden = !on;
  who.textContent = on ? s.user + ' @ ' + s.tenant + ' (' + s.region + ')' : '';
}

function route() {
  let r = parseRoute();
  if (!r) {
    location.replace('#/devices');
    return;
  }
  if (!session() && r.name !== 'login') {
    afterLogin = location.hash;
    location.replace('#/login');
    return;
  }
  if (session() && r.name === 'login') {
    location.replace('#/devices');
    return;
  }
  if (cleanup) {
    try { cleanup(); } catch (e) { setTimeout(() => { throw e; }); }
    cleanup = null;
  }
  if (dialog.open) dialog.close('cancel');
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    const cur = a.dataset.nav === r.name || (r.name === 'device' && a.dataset.nav === 'devices');
    if (cur) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  ctx.setTitle(titles[r.name]);
  main.replaceChildren();
  cleanup = views[r.name].render(main, r, ctx) || null;
  // Move focus to the new page's heading for keyboard and screen-reader users.
  const h1 = main.querySelector('h1');
  if (h1 && r.name !== 'login' && !main.contains(document.activeElement)) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  }
}

function expired() {
  setSession(null);
  hint(false);
  live.stop();
  showAccount();
  loginNotice = 'Your session has ended (it expires after a while without activity). Please log in again.';
  if (parseRoute()?.name === 'login') {
    route();
    return;
  }
  afterLogin = location.hash || '#/devices';
  location.replace('#/login'); // hashchange renders the login page
}
onExpired(expired);

document.getElementById('logout').addEventListener('click', async () => {
  await api('POST', '/api/v1/logout', undefined, { noExpire: true });
  setSession(null);
  hint(false);
  live.stop();
  showAccount();
  afterLogin = '#/devices';
  loginNotice = 'You are logged out.';
  go('#/login');
});

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
setInterval(() => refreshTimes(), 30000);

// Restore a session (the cookie is HttpOnly: only the hub knows whether it is valid).
(async () => {
  const ans = hinted() ? await get('/api/v1/session', { noExpire: true }) : null;
  if (ans && ans.ok && ans.data && ans.data.csrf_token) {
    hint(true);
    setSession(ans.data);
    showAccount();
    live.start(document.getElementById('live-state'), expired);
  } else {
    hint(false);
  }
  document.documentElement.dataset.ready = 'true';
  route();
})();
