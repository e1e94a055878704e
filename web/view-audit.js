// #/audit: who claimed, changed, revoked or reset what and when (GET /api/v1/audit,
// newest first, older pages by the `before` cursor).

import { h, replace, timeEl, absolute, parseTime } from './dom.js';
import { get, genericError } from './client.js';

const PAGE = 50;

function compact(v) {
  const s = JSON.stringify(v);
  return s.length > 200 ? s.slice(0, 199) + '…' : s;
}

/** The Who cell: a user's name, the administrator (phyhub admin on the command line)
 * or a user removed since. */
function actorCell(actor) {
  if (actor === '(admin)') return [h('span', { class: 'actor-admin' }, 'Administrator'), h('span', { class: 'sub' }, 'command line')];
  if (actor === '(removed user)') return h('span', { class: 'muted' }, 'a removed user');
  return actor || '—';
}

/** [what, details] of an entry, as text. */
function describe(e) {
  const d = e.detail && typeof e.detail === 'object' ? e.detail : {};
  switch (e.action) {
    case 'user.login': return ['Logged in', ''];
    case 'user.logout': return ['Logged out', ''];
    case 'device.claim':
      return ['Claimed a device', [d.serial ? 'serial ' + d.serial : '',
        d.by === 'code' ? 'entered the code the device showed' : d.by === 'serial' ? 'entered the serial number' : ''].filter(Boolean).join(', ')];
    case 'device.desired_patch':
      return ['Changed the desired configuration' + (d.version !== undefined ? ' (version ' + d.version + ')' : ''),
        d.patch !== undefined ? 'patch ' + compact(d.patch) : ''];
    case 'fleet.desired_patch':
      return ['Changed the desired configuration of every device tagged ' + (d.tag || '?') +
        (d.matched !== undefined ? ' (' + d.matched + ' devices)' : ''), d.patch !== undefined ? 'patch ' + compact(d.patch) : ''];
    case 'device.tags': return ['Changed the tags', d.tags !== undefined ? compact(d.tags) : ''];
    case 'device.rename':
      return [typeof d.name === 'string' ? 'Renamed a device' : 'Cleared a device name',
        typeof d.name === 'string' ? 'new name ' + d.name : ''];
    case 'device.revoke': return ['Revoked a device', ''];
    case 'device.reset': return ['Reset a device', ''];
    case 'device.delete': return ['Deleted a device', ''];
    case 'token.create':
      return ['Created an API token' + (typeof d.user === 'string' ? ' for ' + d.user : ''),
        [d.id ? 'ID ' + d.id : '', d.expires_in_days !== undefined ? 'valid for ' + d.expires_in_days +
          (d.expires_in_days === 1 ? ' day' : ' days') : ''].filter(Boolean).join(', ')];
    case 'token.revoke': return ['Revoked an API token', d.id ? 'ID ' + d.id : ''];
    case 'user.password':
      return typeof d.user === 'string' ? ['Set the password of ' + d.user, 'their console sessions ended']
        : ['Changed their password', 'their other console sessions ended'];
    case 'user.remove':
      return ['Removed ' + (typeof d.user === 'string' ? 'the user ' + d.user : 'a user'), 'with their API tokens and sessions'];
    case 'tenant.settings':
      if (d.serial_claims === 'attested') return ['Set claims by serial number to attested serials only', 'serial_claims attested'];
      if (d.serial_claims === 'any') {
        return ['Set claims by serial number to any serial', 'serial_claims any: whoever registers an unattested serial first gets its credentials'];
      }
      return ['Changed the tenant settings', e.detail ? compact(e.detail) : ''];
    default: return [e.action, e.detail ? compact(e.detail) : ''];
  }
}

export function render(main) {
  let alive = true;
  let before = null;
  const tbody = h('tbody');
  const msg = h('div', { class: 'msg', role: 'alert' });
  const empty = h('p', { class: 'muted', hidden: true }, 'Nothing has happened yet.');
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Older entries');
  const refresh = h('button', { type: 'button', class: 'btn' }, 'Refresh');
  const table = h('table', { class: 'cards', id: 'audit-table' },
    h('caption', { class: 'visually-hidden' }, 'Audit log, newest first'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'When'),
      h('th', { scope: 'col' }, 'Who'),
      h('th', { scope: 'col' }, 'What'),
      h('th', { scope: 'col' }, 'Device'),
      h('th', { scope: 'col' }, 'Details'))),
    tbody);

  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Audit log'), h('span', { class: 'spacer' }), refresh),
    h('p', { class: 'muted' }, 'Who claimed, changed, revoked, reset or deleted what, who changed settings, API ' +
      'tokens and passwords, and when. Newest first.'),
    msg, h('div', { class: 'table-wrap' }, table), empty, h('div', { class: 'actions' }, more));

  const names = new Map(); // device_id -> name or serial, from the devices list and claims

  function deviceCell(id) {
    const known = names.get(id);
    return [h('a', { href: '#/devices/' + encodeURIComponent(id) }, known || id),
      known ? h('span', { class: 'sub id' }, id) : null];
  }

  function row(e) {
    const [what, details] = describe(e);
    return h('tr', { 'data-action': e.action },
      h('td', { 'data-label': 'When', class: 'when' }, absolute(parseTime(e.at)), h('span', { class: 'sub' }, timeEl(e.at))),
      h('td', { 'data-label': 'Who' }, actorCell(e.actor)),
      h('td', { 'data-label': 'What' }, what),
      h('td', { 'data-label': 'Device' }, e.device_id ? deviceCell(e.device_id) : '—'),
      h('td', { 'data-label': 'Details' }, details ? h('code', null, details) : '—'));
  }

  async function load(append) {
    msg.className = 'msg';
    msg.textContent = '';
    const p = new URLSearchParams({ limit: String(PAGE) });
    if (append && before !== null) p.set('before', String(before));
    const ans = await get('/api/v1/audit?' + p.toString());
    if (!alive) return;
    if (!ans.ok || !ans.data || !Array.isArray(ans.data.entries)) {
      msg.className = 'msg msg-error';
      msg.textContent = 'The audit log could not be loaded: ' + genericError(ans);
      return;
    }
    if (!append && names.size === 0) {
      const devs = await get('/api/v1/devices?limit=500');
      if (!alive) return;
      if (devs.ok && devs.data && Array.isArray(devs.data.devices)) {
        for (const d of devs.data.devices) names.set(d.device_id, d.name || d.serial || d.device_id);
      }
    }
    for (const e of ans.data.entries) {
      if (e.action === 'device.claim' && e.device_id && !names.has(e.device_id) && e.detail && e.detail.serial) {
        names.set(e.device_id, 'serial ' + e.detail.serial);
      }
    }
    const rows = ans.data.entries.map(row);
    if (append) tbody.append(...rows);
    else replace(tbody, rows);
    before = ans.data.next === undefined ? null : ans.data.next;
    more.hidden = before === null;
    const none = tbody.children.length === 0;
    empty.hidden = !none;
    table.hidden = none;
  }

  more.addEventListener('click', () => load(true));
  refresh.addEventListener('click', () => load(false));
  load(false);
  return () => { alive = false; };
}
