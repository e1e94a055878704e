// DOM helpers. Everything the console shows is built with createElement and
// textContent: data from the hub (device names, tags, reported values) is never parsed
// as HTML, so a name like <img onerror=...> is shown as the text it is. Nothing here
// touches an HTML or script sink (innerHTML, script src, event-handler attributes), so
// the console runs under the hub's CSP with Trusted Types set to 'none'.

const NO_TAGS = new Set(['script', 'iframe', 'frame', 'object', 'embed', 'base', 'meta', 'link', 'style']);

/** h('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child, ...) */
export function h(tag, attrs, ...children) {
  if (NO_TAGS.has(String(tag).toLowerCase())) throw new Error('not allowed: <' + tag + '>');
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      const key = k.toLowerCase();
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = String(v);
      else if (key.startsWith('on') && typeof v === 'function') el.addEventListener(key.slice(2), v);
      else if (key === 'style' || key.startsWith('on') || key === 'srcdoc' || key === 'formaction') {
        throw new Error('not allowed: ' + k);
      } else if ((key === 'href' || key === 'src' || key === 'action') && /^\s*(javascript|data|vbscript):/i.test(String(v))) {
        throw new Error('not allowed: ' + k + '=' + String(v).slice(0, 20));
      }
      else if (k === 'value') el.value = v;
      else if (k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'required' ||
               k === 'selected' || k === 'open') el[k] = !!v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces all children of el. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
/** A fresh element id with a prefix (labels and aria-describedby need ids). */
export function newId(prefix) {
  uid += 1;
  return prefix + '-' + uid;
}

// ---- times ----

/** Milliseconds of an RFC 3339 time, or null. */
export function parseTime(s) {
  if (!s) return null;
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
}

/** "less than a minute ago", "3 min ago", "2 h ago", "5 days ago" (or "in …"). */
export function relative(ms, now = Date.now()) {
  if (ms === null || ms === undefined) return 'never';
  let d = Math.round((now - ms) / 1000);
  const future = d < -30;
  d = Math.abs(d);
  let text;
  if (d < 60) return 'less than a minute ago';
  if (d < 3600) text = Math.floor(d / 60) + ' min';
  else if (d < 86400) text = Math.floor(d / 3600) + ' h';
  else {
    const days = Math.floor(d / 86400);
    text = days + (days === 1 ? ' day' : ' days');
  }
  return future ? 'in ' + text : text + ' ago';
}

/** Local date and time, e.g. "2026-11-26 14:03:12". */
export function absolute(ms) {
  if (ms === null || ms === undefined) return '';
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + ' ' +
    p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
}

/** A <time> element whose text is relative ("3 min ago", with an optional prefix) and
 * kept fresh by refreshTimes(); the absolute time is its title. */
export function timeEl(iso, prefix = '') {
  const ms = parseTime(iso);
  const el = h('time', { class: 'rel' });
  if (ms === null) {
    el.textContent = prefix ? prefix + 'never' : 'never';
    return el;
  }
  el.dateTime = new Date(ms).toISOString();
  el.dataset.ms = String(ms);
  el.dataset.prefix = prefix;
  el.title = absolute(ms);
  el.textContent = prefix + relative(ms);
  return el;
}

/** Re-renders every relative time on the page (called every 30 s). */
export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time.rel[data-ms]')) {
    el.textContent = (el.dataset.prefix || '') + relative(Number(el.dataset.ms), now);
  }
}

/** "2 h 5 min" for a number of seconds. */
export function duration(s) {
  s = Math.max(0, Math.floor(Number(s) || 0));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
  return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
}

/** Pretty JSON for display (as text). */
export function pretty(v) {
  return JSON.stringify(v, null, 2);
}
