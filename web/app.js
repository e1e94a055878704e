// PhyStack console: hash routing (#/login, #/devices, #/add, #/devices/<id>, #/audit,
// #/settings),
// session restore, the header, the confirmation dialog, the announcement region and
// the banner (logout failures, a login as someone else in another tab).
// No framework, no build step; every file is served by the hub under its CSP.

import { api, get, getBackground, session, setSession, onExpired, genericError } from './client.js';
import { h, replace, refreshTimes } from './dom.js';
import * as live from './live.js';
import * as loginView from './view-login.js';
import * as devicesView from './view-devices.js';
import * as addView from './view-add.js';
import * as deviceView from './view-device.js';
import * as auditView from './view-audit.js';
import * as settingsView from './view-settings.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const account = document.getElementById('account');
const who = document.getElementById('who');
const announcer = document.getElementById('announce');
const banner = document.getElementById('banner');
const logoutBtn = document.getElementById('logout');
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

// ---- banner: a message that stays until it is dismissed or no longer true ----
function showBanner(kind, id, parts, actions = []) {
  const dismiss = h('button', { type: 'button', class: 'btn' }, 'Dismiss');
  dismiss.addEventListener('click', () => {
    clearBanner();
    main.focus();
  });
  banner.className = 'banner msg msg-' + kind;
  banner.dataset.kind = id;
  replace(banner, h('p', null, parts), h('div', { class: 'actions' }, actions, dismiss));
  banner.hidden = false;
}

function clearBanner() {
  banner.hidden = true;
  banner.replaceChildren();
  delete banner.dataset.kind;
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
const DEVICE_ID = /^dev_[a-z2-7]{26}$/;

/** decodeURIComponent, or null for a malformed escape such as %E0. */
function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch (e) {
    return null;
  }
}

/** The route of the URL's fragment: {name, ...}, or null for none (the devices). A
 * fragment that names no page, a malformed one and an impossible device ID are
 * {name: 'notfound', what: 'page' | 'device', text}. */
function parseRoute() {
  const raw = (location.hash || '').replace(/^#\/?/, '');
  const rawParts = raw.split('/').filter(Boolean);
  if (rawParts.length === 0) return null;
  const parts = rawParts.map(decode);
  const shown = parts.map((p, i) => (p === null ? rawParts[i] : p));
  const page = parts[0];
  if (rawParts.length === 1 && (page === 'login' || page === 'add' || page === 'audit' || page === 'devices' ||
      page === 'settings')) {
    return { name: page };
  }
  if (page === 'devices' && rawParts.length === 2) {
    if (parts[1] !== null && DEVICE_ID.test(parts[1])) return { name: 'device', id: parts[1] };
    return { name: 'notfound', what: 'device', text: shown[1] };
  }
  return { name: 'notfound', what: 'page', text: shown.join('/') };
}

/** What a malformed or unknown fragment gets: a clear message, no request. */
const notFoundView = {
  render(el, r) {
    const text = r.text.length > 80 ? r.text.slice(0, 79) + '…' : r.text;
    const device = r.what === 'device';
    el.append(
      h('div', { class: 'page-head' }, h('h1', null, device ? 'No such device' : 'No such page')),
      h('div', { class: 'msg msg-error', id: 'notfound-msg', 'data-what': r.what },
        device
          ? h('p', null, 'There is no device ', h('code', null, text), ': a device ID is dev_ followed by ' +
            '26 lowercase letters and digits, as in the devices list.')
          : h('p', null, 'The console has no page ', h('code', null, '#/' + text), '.')),
      h('p', null, h('a', { href: '#/devices' }, 'Go to the devices')));
    return null;
  },
};

const views = { login: loginView, devices: devicesView, add: addView, device: deviceView, audit: auditView,
  settings: settingsView, notfound: notFoundView };
const titles = { login: 'Log in', devices: 'Devices', add: 'Add device', device: 'Device', audit: 'Audit log',
  settings: 'Settings', notfound: 'Not found' };

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
    clearBanner();
    showAccount();
    startLive();
    const target = afterLogin;
    afterLogin = '#/devices';
    go(target);
  },
  /** An answer said the session has ended (for calls made with noExpire). */
  sessionEnded() {
    expired();
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

function startLive() {
  live.start(document.getElementById('live-state'), expired, verifySession);
}

/** Ends the current page: its cleanup (stops its requests and subscriptions), the dialog. */
function leaveView() {
  if (cleanup) {
    try { cleanup(); } catch (e) { setTimeout(() => { throw e; }); }
    cleanup = null;
  }
  if (dialog.open) dialog.close('cancel');
}

function route() {
  const r = parseRoute();
  if (!r) {
    location.replace('#/devices');
    return;
  }
  if (!session() && r.name !== 'login' && r.name !== 'notfound') {
    afterLogin = location.hash;
    location.replace('#/login');
    return;
  }
  if (session() && r.name === 'login') {
    location.replace('#/devices');
    return;
  }
  leaveView();
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
  clearBanner();
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

/**
 * After the event stream reconnected (live.js): is the browser's session still the one
 * this tab shows? The cookie is shared by all tabs, so a logout and a login as someone
 * else in another tab means this tab now talks to the hub as that user. 'ok' (same
 * tenant and user: the CSRF token is refreshed, the views reload), 'handled' (session
 * gone: the login page; another identity: back to its devices page with a notice), or
 * 'retry' (the hub did not answer: live.js reconnects and asks again).
 */
async function verifySession() {
  const was = session();
  if (!was) return 'handled';
  const ans = await getBackground('/api/v1/session', { noExpire: true });
  if (session() !== was) return 'handled'; // logged out or switched meanwhile
  if (ans.status === 401) {
    expired();
    return 'handled';
  }
  const s = ans.data;
  if (!ans.ok || !s || typeof s.csrf_token !== 'string' || typeof s.tenant !== 'string' || typeof s.user !== 'string') {
    return 'retry';
  }
  if (s.tenant !== was.tenant || s.user !== was.user || s.region !== was.region) {
    switchIdentity(was, s);
    return 'handled';
  }
  setSession(s); // a new login of the same user has a new CSRF token
  showAccount();
  return 'ok';
}

/** Another identity's session is in the cookie now: nothing of the old one may stay. */
function switchIdentity(was, now) {
  leaveView();
  main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
  setSession(now);
  hint(true);
  showAccount();
  afterLogin = '#/devices';
  loginNotice = '';
  showBanner('info', 'identity-changed', [
    h('strong', null, 'You are now logged in as ' + now.user + ' of ' + now.tenant + '.'),
    ' Someone logged in with this browser in another tab or window, so this tab left what it showed for ' +
    was.user + ' of ' + was.tenant + ' and shows the devices of ' + now.tenant + '.']);
  go('#/devices');
}

/** Logs out; only a 204 (or 401: the session had already ended) clears this tab. */
let loggingOut = false;
async function logout() {
  if (loggingOut) return;
  loggingOut = true;
  logoutBtn.disabled = true;
  const ans = await api('POST', '/api/v1/logout', undefined, { noExpire: true });
  loggingOut = false;
  logoutBtn.disabled = false;
  if (ans.status === 204 || ans.status === 401) {
    setSession(null);
    hint(false);
    live.stop();
    clearBanner();
    showAccount();
    afterLogin = '#/devices';
    loginNotice = 'You are logged out.';
    go('#/login');
    return;
  }
  if (!session()) return; // the session ended meanwhile: the login page is shown already
  const retry = h('button', { type: 'button', class: 'btn btn-primary', id: 'logout-retry' }, 'Try logging out again');
  retry.addEventListener('click', logout);
  showBanner('error', 'logout-failed', [
    h('strong', null, 'Logging out failed: you are still logged in.'), ' ', genericError(ans)], [retry]);
  retry.focus();
}
logoutBtn.addEventListener('click', logout);

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
setInterval(() => refreshTimes(), 30000);

// Restore a session (the cookie is HttpOnly: only the hub knows whether it is valid).
// Opening or reloading the console is something the user did, so this GET is not a
// background request: it counts as a use of the session (the page's first API call,
// sent right after it, would count anyway).
(async () => {
  const ans = hinted() ? await get('/api/v1/session', { noExpire: true }) : null;
  if (ans && ans.ok && ans.data && ans.data.csrf_token) {
    hint(true);
    setSession(ans.data);
    showAccount();
    startLive();
  } else {
    hint(false);
  }
  document.documentElement.dataset.ready = 'true';
  route();
})();
