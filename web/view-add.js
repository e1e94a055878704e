// #/add: claim a device by its serial number or by the 6-character code its screen
// shows (POST /api/v1/devices/claim), then follow it live: waiting for device →
// provisioned (credentials picked up) → online.

import { h, replace } from './dom.js';
import { api, getBackground, session, genericError, waitText, devicePath } from './client.js';
import { badge, statusOf, displayName } from './devicefmt.js';
import * as live from './live.js';

const CODE_RE = /^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{6}$/i;
const SERIAL_RE = /^[A-Za-z0-9._-]{1,64}$/;
const NAME_MAX_BYTES = 64; // the hub counts the name's UTF-8 bytes, not its characters
const utf8 = new TextEncoder();

/** Why the hub would refuse this (trimmed) device name, or '' when it is fine. */
export function nameProblem(name) {
  const bytes = utf8.encode(name).length;
  if (bytes > NAME_MAX_BYTES) {
    return 'The name is ' + bytes + ' bytes long, at most ' + NAME_MAX_BYTES + ' are allowed. Letters such as ' +
      'ä or é take 2 bytes, many other characters 3 and emoji 4: shorten the name by ' + (bytes - NAME_MAX_BYTES) +
      (bytes - NAME_MAX_BYTES === 1 ? ' byte.' : ' bytes.');
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'The name contains a control character (such as a tab): remove it.';
  return '';
}

/** What the user typed: {kind: 'code'|'serial'|'invalid'|'empty', value, why}. */
export function classify(raw, forceSerial) {
  const t = raw.trim();
  if (!t) return { kind: 'empty' };
  const squeezed = t.replace(/\s+/g, '');
  if (!forceSerial && CODE_RE.test(squeezed)) return { kind: 'code', value: squeezed.toUpperCase() };
  if (SERIAL_RE.test(t)) return { kind: 'serial', value: t };
  if (/\s/.test(t)) return { kind: 'invalid', why: 'A serial number has no spaces.' };
  if (t.length > 64) return { kind: 'invalid', why: 'A serial number has at most 64 characters.' };
  return { kind: 'invalid', why: 'A serial number uses only letters, digits, dot, underscore and hyphen.' };
}

function claimError(ans, what) {
  const e = ans.error;
  if (ans.status === 404 && e === 'unknown_serial') {
    return ['No device with serial ' + what.value + ' is waiting to be claimed.',
      'Check the serial number, and that the device is switched on and online: it announces itself when it starts. A device that was already claimed must be reset by its owner first.'];
  }
  if (ans.status === 404 && e === 'expired_code') {
    return ['The code ' + what.value + ' is not valid (any more).',
      'Codes expire after a few minutes and the device then shows a new one. Enter the code the device shows right now.'];
  }
  if (ans.status === 409 && e === 'already_claimed') {
    return ['This ' + (what.kind === 'code' ? 'code has already been used' : 'device has already been claimed') + '.',
      'The device belongs to a tenant already (perhaps yours: look in the devices list). To move it, its owner resets it first.'];
  }
  if (ans.status === 409 && e === 'serial_in_use') {
    return ['More than one device has announced itself with serial ' + what.value + '.',
      'The serial alone cannot tell which one is yours. Enter the 6-character code shown on the device\'s screen instead.'];
  }
  if (ans.status === 409 && e === 'wrong_region') {
    return ['This tenant belongs to another region.', 'Claim the device on your region\'s console.'];
  }
  if (ans.status === 429) {
    return ['Too many failed attempts.',
      'To protect devices from guessed codes, claiming is paused for your account. Try again in ' + waitText(ans.retryAfter) + '.'];
  }
  if (ans.status === 503 || ans.status === 502) {
    return ['The provisioning service is not available right now.', 'Nothing was claimed. Try again in a moment.'];
  }
  if (ans.status === 400) {
    return ['The hub refused the request.', ans.message || 'Check what you entered.'];
  }
  return ['The device could not be claimed.', genericError(ans)];
}

export function render(main, route, ctx) {
  let alive = true;
  let off = null;
  const ident = h('input', { type: 'text', id: 'claim-ident', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'none', required: true, 'aria-describedby': 'claim-kind claim-ident-hint' });
  const identHint = h('p', { class: 'hint', id: 'claim-ident-hint' },
    'The serial number is printed on the device. The code (6 characters) is shown on its screen.');
  const kind = h('p', { class: 'hint kind', id: 'claim-kind', 'aria-live': 'polite' });
  const asSerial = h('input', { type: 'checkbox', id: 'claim-as-serial' });
  const asSerialBox = h('div', { class: 'field', hidden: true },
    h('label', { for: 'claim-as-serial' }, asSerial, ' It is a serial number, not a code'));
  const name = h('input', { type: 'text', id: 'claim-name', autocomplete: 'off',
    'aria-describedby': 'claim-name-msg claim-name-hint' });
  const nameMsg = h('p', { class: 'hint field-error', id: 'claim-name-msg', 'aria-live': 'polite' });
  const preview = h('div', { class: 'preview', id: 'claim-preview', hidden: true, 'aria-live': 'polite' });
  const msg = h('div', { class: 'msg', role: 'alert', id: 'claim-msg' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Claim device');
  const result = h('section', { class: 'panel', id: 'claim-result', hidden: true, 'aria-labelledby': 'claim-result-title' });

  const form = h('form', { class: 'panel', novalidate: true, 'aria-labelledby': 'add-title' },
    h('div', { class: 'field' },
      h('label', { for: 'claim-ident' }, 'Serial number or code'), ident, kind, identHint),
    asSerialBox,
    h('div', { class: 'field' },
      h('label', { for: 'claim-name' }, 'Name (optional)'), name, nameMsg,
      h('p', { class: 'hint', id: 'claim-name-hint' }, 'How the device is listed, e.g. "Lobby display". ' +
        'At most 64 bytes: a plain letter or digit is 1 byte, ä or é 2, emoji 4.')),
    preview, msg,
    h('div', { class: 'actions' }, submit, h('a', { class: 'btn', href: '#/devices' }, 'Cancel')));

  main.append(h('div', { class: 'page-head' }, h('h1', { id: 'add-title' }, 'Add device')), form, result);

  function current() {
    return classify(ident.value, asSerial.checked);
  }

  /** Shows (and returns) what is wrong with the name, '' when nothing. */
  function checkName() {
    const problem = nameProblem(name.value.trim());
    nameMsg.textContent = problem;
    name.setAttribute('aria-invalid', problem ? 'true' : 'false');
    return problem;
  }

  function describe() {
    checkName();
    const c = current();
    const looksCode = CODE_RE.test(ident.value.trim().replace(/\s+/g, ''));
    asSerialBox.hidden = !(looksCode && SERIAL_RE.test(ident.value.trim()));
    ident.setAttribute('aria-invalid', c.kind === 'invalid' ? 'true' : 'false');
    if (c.kind === 'code') kind.textContent = 'This is a code (the 6 characters a device shows on its screen).';
    else if (c.kind === 'serial') kind.textContent = 'This is a serial number.';
    else if (c.kind === 'invalid') kind.textContent = 'Not a valid serial number or code: ' + c.why;
    else kind.textContent = '';
    if (c.kind === 'code' || c.kind === 'serial') {
      const s = session();
      replace(preview,
        h('strong', null, 'Will claim: '),
        c.kind === 'code' ? 'the device showing code ' : 'the device with serial number ',
        h('code', { class: 'claim-value' }, c.value),
        name.value.trim() ? [', named ', h('q', null, name.value.trim())] : '',
        s ? ' into tenant ' + s.tenant + ' (region ' + s.region + ').' : '.');
      preview.hidden = false;
    } else {
      preview.hidden = true;
    }
  }
  ident.addEventListener('input', describe);
  asSerial.addEventListener('change', describe);
  name.addEventListener('input', describe);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.className = 'msg';
    msg.replaceChildren();
    delete msg.dataset.error;
    const c = current();
    if (c.kind !== 'code' && c.kind !== 'serial') {
      msg.className = 'msg msg-error';
      msg.textContent = c.kind === 'empty' ? 'Enter the serial number or the code shown on the device.'
        : 'Not a valid serial number or code: ' + c.why;
      ident.setAttribute('aria-invalid', 'true');
      ident.focus();
      return;
    }
    const problem = checkName();
    if (problem) {
      msg.className = 'msg msg-error';
      msg.textContent = problem;
      msg.dataset.error = 'name';
      name.focus();
      return;
    }
    const body = { [c.kind]: c.value };
    const n = name.value.trim();
    if (n) body.name = n;
    submit.disabled = true;
    submit.textContent = 'Claiming…';
    const ans = await api('POST', '/api/v1/devices/claim', body);
    if (!alive) return;
    submit.disabled = false;
    submit.textContent = 'Claim device';
    if (ans.status === 201 && ans.data && ans.data.device_id) {
      ident.value = '';
      name.value = '';
      describe();
      form.hidden = true;
      follow(ans.data, c);
      return;
    }
    const [title, detail] = claimError(ans, c);
    msg.className = 'msg msg-error';
    replace(msg, h('p', null, h('strong', null, title)), h('p', null, detail));
    msg.dataset.error = ans.error || String(ans.status);
    ident.focus();
  });

  /** Shows the claimed device and follows its state live. */
  function follow(dev, what) {
    const steps = h('ol', { class: 'steps' });
    const title = h('h2', { id: 'claim-result-title', tabindex: '-1' });
    const statusLine = h('p', { class: 'claim-status' });
    const link = h('a', { href: '#/devices/' + encodeURIComponent(dev.device_id) }, 'Open the device page');
    const again = h('button', { type: 'button', class: 'btn' }, 'Add another device');
    again.addEventListener('click', () => {
      if (off) off();
      off = null;
      result.hidden = true;
      form.hidden = false;
      ident.focus();
    });
    replace(result, title,
      h('p', null, 'Claimed ', what.kind === 'code' ? 'by code ' : 'by serial number ', h('code', null, what.value),
        '. Device ID ', h('code', { class: 'id' }, dev.device_id), dev.serial ? [', serial ', h('code', null, dev.serial)] : '', '.'),
      statusLine, steps, h('div', { class: 'actions' }, link, again));
    result.hidden = false;

    let last = '';
    function show(d) {
      const st = statusOf(d);
      title.textContent = displayName(d);
      replace(statusLine, 'Status: ', badge(d));
      const picked = st.key === 'provisioned' || st.key === 'online' || d.state === 'active';
      const online = st.key === 'online';
      const items = [
        ['Claimed: the device is reserved for your tenant.', true],
        [picked ? 'Provisioned: the device picked up its credentials.' : 'Waiting for the device to pick up its credentials (it asks every few seconds).', picked],
        [online ? 'Online: the device is connected.' : 'Waiting for the device to connect.', online],
      ];
      const firstOpen = items.findIndex(([, done]) => !done);
      replace(steps, items.map(([text, done], i) =>
        h('li', { class: done ? 'done' : (i === firstOpen ? 'current' : '') }, text)));
      if (st.key === 'revoked') replace(steps, h('li', null, 'The device was revoked.'));
      if (st.key !== last) {
        if (last) ctx.announce(displayName(d) + ': ' + st.label + '.');
        last = st.key;
      }
    }
    show(dev);
    title.focus();
    ctx.announce('Device claimed: ' + displayName(dev) + ', waiting for the device.');

    let cur = dev;
    // Follows the device by itself (after events, a reconnect): background requests.
    async function refresh() {
      const ans = await getBackground(devicePath(dev.device_id));
      if (alive && ans.ok && ans.data) {
        cur = ans.data;
        show(cur);
      }
    }
    if (off) off();
    off = live.on((ev) => {
      if (ev.type === 'resync') {
        refresh();
        return;
      }
      if (ev.data.device_id !== dev.device_id) return;
      if (ev.type === 'state') cur = Object.assign({}, cur, { state: ev.data.state });
      else if (ev.type === 'online') cur = Object.assign({}, cur, { presence: 'online', state: cur.state === 'revoked' ? cur.state : 'active' });
      else if (ev.type === 'offline') cur = Object.assign({}, cur, { presence: 'offline' });
      else return;
      show(cur);
      refresh();
    });
    // The device may have been quicker than this page's event stream.
    refresh();
  }

  ident.focus();
  return () => {
    alive = false;
    if (off) off();
  };
}
