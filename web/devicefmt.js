// How a device is shown: its status badge, "last seen" text, last status summary and
// tags, shared by the devices list, the add-device result and the device page.

import { h, timeEl, duration } from './dom.js';

/** {key, label} of a device's status: revoked, waiting (pending_delivery),
 * provisioned, online or offline. */
export function statusOf(dev) {
  if (dev.state === 'deleted') return { key: 'deleted', label: 'Deleted' };
  if (dev.state === 'revoked') return { key: 'revoked', label: 'Revoked' };
  if (dev.presence === 'online') return { key: 'online', label: 'Online' };
  if (dev.state === 'pending_delivery' || dev.state === 'claiming') {
    return { key: 'waiting', label: 'Waiting for device' };
  }
  if (dev.state === 'provisioned') return { key: 'provisioned', label: 'Provisioned' };
  return { key: 'offline', label: 'Offline' };
}

export function badge(dev) {
  const st = statusOf(dev);
  return h('span', { class: 'badge st-' + st.key, 'data-status': st.key }, st.label);
}

/** "connected 3 min ago" / "last seen 3 min ago" / "never connected" as a <time>. */
export function seenEl(dev) {
  const st = statusOf(dev);
  if (st.key === 'online' && dev.connected_at) return timeEl(dev.connected_at, 'connected ');
  if (st.key === 'revoked' || st.key === 'deleted') {
    if (dev.presence === 'online') return h('span', { 'data-presence': 'online' }, 'still connected, disconnecting…');
    return h('span', { 'data-presence': 'offline' }, 'offline',
      dev.last_seen ? [' · ', timeEl(dev.last_seen, 'last seen ')] : '');
  }
  if (st.key === 'waiting') return h('span', null, 'claimed, not picked up yet');
  if (st.key === 'provisioned' && !dev.last_seen) return h('span', null, 'credentials picked up, not connected yet');
  if (dev.last_seen) return timeEl(dev.last_seen, 'last seen ');
  return h('span', null, 'never connected');
}

export function displayName(dev) {
  return dev.name ? dev.name : dev.serial || dev.device_id;
}

function num(v, digits) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : null;
}

/** One line summarising a status report: "agent 1.2 · up 3 h 2 min · load 0.12". */
export function statusSummary(st) {
  if (!st || typeof st !== 'object') return '';
  const parts = [];
  if (typeof st.agent_version === 'string') parts.push('agent ' + st.agent_version);
  if (st.uptime_s !== undefined) parts.push('up ' + duration(st.uptime_s));
  if (Array.isArray(st.load) && num(st.load[0], 2) !== null) parts.push('load ' + num(st.load[0], 2));
  if (typeof st.mem_total_kb === 'number' && typeof st.mem_available_kb === 'number' && st.mem_total_kb > 0) {
    parts.push(Math.round(100 * (1 - st.mem_available_kb / st.mem_total_kb)) + '% mem used');
  }
  if (typeof st.disk_total_kb === 'number' && typeof st.disk_free_kb === 'number' && st.disk_total_kb > 0) {
    parts.push(Math.round(100 * (1 - st.disk_free_kb / st.disk_total_kb)) + '% disk used');
  }
  const known = new Set(['agent_version', 'uptime_s', 'agent_uptime_s', 'load', 'mem_total_kb', 'mem_available_kb',
    'disk_total_kb', 'disk_free_kb', 'addresses']);
  const rest = Object.keys(st).filter((k) => !known.has(k));
  if (rest.length) {
    let extra = rest.map((k) => k + '=' + (typeof st[k] === 'string' ? st[k] : JSON.stringify(st[k]))).join(', ');
    if (extra.length > 80) extra = extra.slice(0, 79) + '…';
    parts.push(extra);
  }
  return parts.join(' · ');
}

export function tagList(tags) {
  const keys = Object.keys(tags || {});
  if (!keys.length) return h('span', { class: 'muted' }, 'none');
  return keys.sort().map((k) => h('span', { class: 'tag' }, k + ': ' + tags[k]));
}
