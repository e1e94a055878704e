// #/devices: the tenant's devices, live. The list comes from GET /api/v1/devices
// (presence and tag filters on the hub, pages by cursor); search filters the loaded
// rows; events from live.js update single rows without reloading the page. Loads and
// refetches that no user action asked for (after events, after a reconnect) are
// background requests: they do not keep the session alive.

import { h, replace, timeEl } from './dom.js';
import { get, getBackground, genericError, devicePath } from './client.js';
import { badge, seenEl, statusOf, statusSummary, tagList, displayName } from './devicefmt.js';
import * as live from './live.js';

const PAGE = 100;
const TAG_RE = /^[A-Za-z0-9._-]{1,64}:.*$/;

export function render(main, route, ctx) {
  const devices = new Map(); // device_id -> device, in list order
  const rows = new Map();    // device_id -> <tr>
  let next = null;
  let alive = true;
  let loadSeq = 0;
  const pending = new Map(); // device_id -> timer of a scheduled refetch

  const search = h('input', { type: 'search', id: 'dev-search', autocomplete: 'off',
    'aria-describedby': 'dev-count', placeholder: 'name, ID, serial or tag' });
  const presence = h('select', { id: 'dev-status' },
    h('option', { value: '' }, 'All'),
    h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'));
  const tag = h('input', { type: 'text', id: 'dev-tag', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'key:value', 'aria-describedby': 'dev-tag-hint' });
  const tagHint = h('p', { class: 'hint', id: 'dev-tag-hint' }, 'Exact tag, e.g. site:berlin');
  const count = h('p', { class: 'muted small', id: 'dev-count', role: 'status' });
  const msg = h('div', { class: 'msg', role: 'alert' });
  const tbody = h('tbody');
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Load more devices');
  const table = h('table', { class: 'cards', id: 'devices-table' },
    h('caption', { class: 'visually-hidden' }, 'Devices of this tenant'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Name'),
      h('th', { scope: 'col' }, 'Device ID'),
      h('th', { scope: 'col' }, 'Serial'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Last status report'),
      h('th', { scope: 'col' }, 'Tags'))),
    tbody);
  const empty = h('p', { class: 'empty', hidden: true });

  main.append(
    h('div', { class: 'page-head' },
      h('h1', null, 'Devices'),
      h('span', { class: 'spacer' }),
      h('a', { class: 'btn btn-primary', href: '#/add' }, 'Add device')),
    h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Filter devices' },
      h('div', { class: 'field' }, h('label', { for: 'dev-search' }, 'Search'), search),
      h('div', { class: 'field narrow' }, h('label', { for: 'dev-status' }, 'Status'), presence),
      h('div', { class: 'field narrow' }, h('label', { for: 'dev-tag' }, 'Tag'), tag, tagHint)),
    count, msg,
    h('div', { class: 'table-wrap' }, table),
    empty,
    h('div', { class: 'actions' }, more));

  function matches(dev) {
    const want = presence.value;
    if (dev.state === 'deleted') return false;
    if (want && dev.presence !== want) return false;
    const t = tag.value.trim();
    if (t && TAG_RE.test(t)) {
      const i = t.indexOf(':');
      if ((dev.tags || {})[t.slice(0, i)] !== t.slice(i + 1)) return false;
    }
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    const hay = [dev.name || '', dev.device_id, dev.serial || '', statusOf(dev).label]
      .concat(Object.entries(dev.tags || {}).map(([k, v]) => k + ':' + v)).join('\n').toLowerCase();
    return hay.includes(q);
  }

  function rowFor(dev) {
    const st = dev.last_status ? statusSummary(dev.last_status) : '';
    return h('tr', { 'data-device-id': dev.device_id, 'data-status': statusOf(dev).key, 'data-presence': dev.presence },
      h('td', { class: 'name-cell', 'data-label': 'Name' },
        h('a', { href: '#/devices/' + encodeURIComponent(dev.device_id), 'data-focus': 'name' }, displayName(dev)),
        dev.name ? null : h('span', { class: 'sub' }, 'no name')),
      h('td', { class: 'id', 'data-label': 'Device ID' }, dev.device_id),
      h('td', { class: 'id', 'data-label': 'Serial' }, dev.serial || '—'),
      h('td', { 'data-label': 'Status' }, badge(dev), h('span', { class: 'sub' }, seenEl(dev))),
      h('td', { class: 'last-status', 'data-label': 'Last status' },
        dev.last_status ? [h('span', null, st || 'report'), h('span', { class: 'sub' }, timeEl(dev.last_status_at))]
          : h('span', { class: 'muted' }, 'none yet')),
      h('td', { 'data-label': 'Tags' }, tagList(dev.tags)));
  }

  function updateCount() {
    const shown = [...devices.values()].filter(matches).length;
    const total = [...devices.values()].filter((d) => d.state !== 'deleted').length;
    count.textContent = shown === total ? total + (total === 1 ? ' device' : ' devices') + (next ? ' loaded' : '')
      : shown + ' of ' + total + ' devices shown';
    empty.hidden = shown !== 0;
    table.hidden = shown === 0;
    if (shown === 0) {
      empty.replaceChildren(total === 0 && !search.value && !presence.value && !tag.value
        ? h('span', null, 'No devices yet. ', h('a', { href: '#/add' }, 'Add your first device'), '.')
        : 'No device matches the filter.');
    }
    more.hidden = !next;
  }

  function renderAll() {
    rows.clear();
    const trs = [];
    for (const dev of devices.values()) {
      if (!matches(dev)) continue;
      const tr = rowFor(dev);
      rows.set(dev.device_id, tr);
      trs.push(tr);
    }
    replace(tbody, trs);
    updateCount();
  }

  /** Re-renders one device's row in place (keeping keyboard focus on it). */
  function updateRow(dev, flash) {
    const old = rows.get(dev.device_id);
    const show = matches(dev);
    if (!show) {
      if (old) old.remove();
      rows.delete(dev.device_id);
      updateCount();
      return;
    }
    const tr = rowFor(dev);
    if (flash) tr.classList.add('flash');
    const focused = old && old.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
    if (old) {
      old.replaceWith(tr);
    } else {
      // keep list order (device ID order) for new rows
      const ids = [...devices.keys()].filter((id) => id === dev.device_id || rows.has(id));
      const idx = ids.indexOf(dev.device_id);
      const after = ids.slice(idx + 1).map((id) => rows.get(id)).find(Boolean);
      tbody.insertBefore(tr, after || null);
    }
    rows.set(dev.device_id, tr);
    if (focused) {
      const el = tr.querySelector('[data-focus="' + focused + '"]');
      if (el) el.focus();
    }
    updateCount();
  }

  function query(after) {
    const p = new URLSearchParams();
    p.set('limit', String(PAGE));
    if (presence.value) p.set('presence', presence.value);
    const t = tag.value.trim();
    if (t && TAG_RE.test(t)) p.set('tag', t);
    if (after) p.set('after', after);
    return '/api/v1/devices?' + p.toString().replace(/\+/g, '%20');
  }

  /** Loads the list (or its next page); background for a reload no user asked for. */
  async function load(append, background = false) {
    const seq = ++loadSeq;
    msg.className = 'msg';
    msg.textContent = '';
    if (!append && !background) count.textContent = 'Loading devices…';
    const ans = await get(query(append ? next : null), { background });
    if (!alive || seq !== loadSeq) return;
    if (!ans.ok || !ans.data || !Array.isArray(ans.data.devices)) {
      msg.className = 'msg msg-error';
      msg.textContent = 'The devices could not be loaded: ' + genericError(ans);
      count.textContent = '';
      return;
    }
    if (!append) devices.clear();
    for (const d of ans.data.devices) devices.set(d.device_id, d);
    if (!append) {
      // keep device-ID order after a reload
      const sorted = [...devices.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
      devices.clear();
      for (const [k, v] of sorted) devices.set(k, v);
    }
    next = ans.data.next || null;
    renderAll();
  }

  /** Fetches one device again (debounced) and updates its row. */
  function refetch(id, flash) {
    if (pending.has(id)) return;
    pending.set(id, setTimeout(async () => {
      pending.delete(id);
      const ans = await getBackground(devicePath(id));
      if (!alive) return;
      if (ans.status === 404) {
        devices.delete(id);
        const tr = rows.get(id);
        if (tr) tr.remove();
        rows.delete(id);
        updateCount();
        return;
      }
      if (!ans.ok || !ans.data) return;
      const dev = ans.data;
      delete dev.twin;
      if (!devices.has(id)) {
        devices.set(id, dev);
        const sorted = [...devices.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
        devices.clear();
        for (const [k, v] of sorted) devices.set(k, v);
      } else {
        devices.set(id, dev);
      }
      updateRow(dev, flash);
    }, 150));
  }

  const off = live.on((ev) => {
    if (ev.type === 'resync') {
      load(false, true);
      return;
    }
    const id = ev.data.device_id;
    const dev = devices.get(id);
    const nowIso = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    switch (ev.type) {
      case 'online':
        if (dev) {
          dev.presence = 'online';
          dev.connected_at = nowIso;
          dev.last_seen = nowIso;
          if (dev.state === 'pending_delivery' || dev.state === 'provisioned') dev.state = 'active';
          updateRow(dev, true);
          ctx.announce(displayName(dev) + ' is online.');
        }
        refetch(id, false);
        break;
      case 'offline':
        if (dev) {
          dev.presence = 'offline';
          updateRow(dev, true);
          ctx.announce(displayName(dev) + ' went offline.');
        }
        refetch(id, false);
        break;
      case 'status':
        if (dev) {
          dev.last_status = ev.data.status;
          dev.last_status_at = nowIso;
          updateRow(dev, false);
        }
        break;
      case 'state':
        if (ev.data.state === 'deleted') {
          if (dev) {
            dev.state = 'deleted';
            devices.delete(id);
            const tr = rows.get(id);
            if (tr) tr.remove();
            rows.delete(id);
            updateCount();
          }
          break;
        }
        if (dev) {
          dev.state = ev.data.state;
          updateRow(dev, true);
        }
        refetch(id, true);
        break;
      case 'tags':
        if (dev && ev.data.tags && typeof ev.data.tags === 'object') {
          dev.tags = ev.data.tags;
          updateRow(dev, true);
        }
        break;
      case 'name':
        // Renamed: the event carries the new name (null when it was removed).
        if (dev) {
          dev.name = typeof ev.data.name === 'string' && ev.data.name ? ev.data.name : null;
          updateRow(dev, true);
        }
        break;
      default:
        break;
    }
  });

  let typing = null;
  search.addEventListener('input', () => renderAll());
  presence.addEventListener('change', () => load(false));
  tag.addEventListener('input', () => {
    if (typing) clearTimeout(typing);
    const t = tag.value.trim();
    tag.setAttribute('aria-invalid', t && !TAG_RE.test(t) ? 'true' : 'false');
    typing = setTimeout(() => {
      if (!t || TAG_RE.test(t)) load(false);
    }, 400);
  });
  main.querySelector('form').addEventListener('submit', (e) => {
    e.preventDefault();
    load(false);
  });
  more.addEventListener('click', () => load(true));

  load(false);
  return () => {
    alive = false;
    off();
    for (const t of pending.values()) clearTimeout(t);
    if (typing) clearTimeout(typing);
  };
}
