// #/add: claim a device by its serial number or by the 6-character code its screen
// shows (POST /api/v1/devices/claim), then follow it live: waiting for device →
// provisioned (credentials picked up) → online. Before a claim by serial the page
// reads the tenant's policy (GET /api/v1/tenant, once); where any serial may be
// claimed it asks who registered the serial (GET /api/v1/registrations) and, for a
// serial its manufacturer did not attest, shows that and claims only after a second,
// explicit click ("Claim anyway").

import { h, replace, timeEl, absolute, parseTime } from './dom.js';
import { api, get, getBackground, session, genericError, waitText, devicePath } from './client.js';
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
  if (ans.status === 409 && e === 'code_required') {
    return ['Serial ' + what.value + ' cannot be claimed by its serial number: it is not attested.',
      'Its manufacturer did not attest this serial, so anyone who knows it could have registered it, and your ' +
      'tenant claims such devices only by code. Enter the 6-character code shown on the device\'s screen instead.'];
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
  const formActions = h('div', { class: 'actions' }, submit, h('a', { class: 'btn', href: '#/devices' }, 'Cancel'));
  const warning = h('section', { class: 'claim-warning', id: 'claim-warning', hidden: true,
    'aria-labelledby': 'claim-warning-title' });
  const result = h('section', { class: 'panel', id: 'claim-result', hidden: true, 'aria-labelledby': 'claim-result-title' });
  let policy = null;   // the tenant's serial_claims, read once per page before a claim by serial
  let pending = null;  // the claim by serial the warning is about: {body, what}

  const form = h('form', { class: 'panel', novalidate: true, 'aria-labelledby': 'add-title' },
    h('div', { class: 'field' },
      h('label', { for: 'claim-ident' }, 'Serial number or code'), ident, kind, identHint),
    asSerialBox,
    h('div', { class: 'field' },
      h('label', { for: 'claim-name' }, 'Name (optional)'), name, nameMsg,
      h('p', { class: 'hint', id: 'claim-name-hint' }, 'How the device is listed, e.g. "Lobby display". ' +
        'At most 64 bytes: a plain letter or digit is 1 byte, ä or é 2, emoji 4.')),
    preview, msg, warning, formActions);

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
    hideWarning();
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
    if (c.kind === 'serial') {
      submit.disabled = true;
      submit.textContent = 'Checking…';
      const check = await checkSerial(c.value);
      if (!alive) return;
      submit.disabled = false;
      submit.textContent = 'Claim device';
      if (check.kind === 'none') {
        msg.className = 'msg msg-error';
        replace(msg, h('p', null, h('strong', null, 'No device with serial ' + c.value + ' is waiting to be claimed.')),
          h('p', null, 'No device has registered this serial number, so a claim by serial would fail (unknown serial). ' +
            'Check the serial number, and that the device is switched on and online: it registers when it starts. ' +
            'Or enter the code shown on the device\'s screen.'));
        msg.dataset.error = 'unknown_serial';
        msg.dataset.checked = 'registrations';
        ident.focus();
        return;
      }
      if (check.kind === 'warn') {
        showWarning(check, body, c);
        return;
      }
    }
    await claim(body, c, submit);
  });

  /** Sends the claim; shows the device (201, or 200 for a claim this user made a
   * moment ago) or what went wrong. */
  async function claim(body, c, btn) {
    const label = btn.textContent;
    btn.disabled = true;
    btn.textContent = 'Claiming…';
    const ans = await api('POST', '/api/v1/devices/claim', body);
    if (!alive) return;
    btn.disabled = false;
    btn.textContent = label;
    hideWarning();
    if ((ans.status === 201 || ans.status === 200) && ans.data && ans.data.device_id) {
      ident.value = '';
      name.value = '';
      describe();
      form.hidden = true;
      follow(ans.data, c, ans.status === 200);
      return;
    }
    const [title, detail] = claimError(ans, c);
    msg.className = 'msg msg-error';
    replace(msg, h('p', null, h('strong', null, title)), h('p', null, detail));
    msg.dataset.error = ans.error || String(ans.status);
    delete msg.dataset.checked;
    ident.focus();
  }

  /**
   * Before a claim by serial: {kind: 'go'} (attested serials only, an attested or an
   * already claimed serial: the hub decides), {kind: 'none'} (nobody registered it) or
   * {kind: 'warn', regs, ans} (anyone could have registered it: regs are the
   * registrations a claim would hand the credentials to, null when the hub cannot
   * show them, with its answer).
   */
  async function checkSerial(serial) {
    if (policy === null) {
      const t = await get('/api/v1/tenant');
      if (!alive) return { kind: 'go' };
      if (t.ok && t.data && typeof t.data.serial_claims === 'string') policy = t.data.serial_claims;
    }
    if (policy === 'attested') return { kind: 'go' };
    const ans = await get('/api/v1/registrations?' + new URLSearchParams({ serial }).toString());
    if (ans.status === 403 && ans.error === 'forbidden') return { kind: 'go' }; // attested only by now
    const d = ans.data;
    if (ans.ok && d && Array.isArray(d.registrations)) {
      if (d.attested || d.claimed) return { kind: 'go' };
      if (d.registrations.length === 0) return { kind: 'none' };
      return { kind: 'warn', regs: d.registrations, ans };
    }
    return { kind: 'warn', regs: null, ans };
  }

  function hideWarning() {
    pending = null;
    if (warning.hidden) return;
    warning.hidden = true;
    warning.replaceChildren();
    formActions.hidden = false;
  }

  /** What a claim by serial of an unattested serial would hand the credentials to;
   * the claim is sent only after "Claim anyway". */
  function showWarning(check, body, c) {
    const regs = check.regs;
    const anyway = h('button', { type: 'button', class: 'btn btn-danger', id: 'claim-anyway' }, 'Claim anyway');
    const useCode = h('button', { type: 'button', class: 'btn', id: 'claim-use-code' }, 'Enter the code instead');
    anyway.addEventListener('click', () => {
      if (!pending) return;
      useCode.disabled = true;
      claim(pending.body, pending.what, anyway);
    });
    useCode.addEventListener('click', () => {
      hideWarning();
      ident.value = '';
      describe();
      ident.focus();
    });
    const cell = (label, ...content) => h('td', { 'data-label': label }, ...content);
    const when = (iso) => (iso ? h('span', null, absolute(parseTime(iso)), h('span', { class: 'sub' }, timeEl(iso))) : 'unknown');
    let what;
    if (regs) {
      what = [
        h('p', null, 'A claim by serial number hands the device\'s credentials to whatever registered this serial' +
          (regs.length === 1 ? ':' : '. ' + regs.length + ' registrations are waiting:')),
        h('div', { class: 'table-wrap' }, h('table', { class: 'cards', id: 'claim-registrations' },
          h('caption', { class: 'visually-hidden' }, 'Registrations of serial ' + c.value),
          h('thead', null, h('tr', null,
            ['First seen', 'Last seen', 'Source address', 'Agent', 'Proven'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', null, regs.map((r) => h('tr', { 'data-proven': r.proven ? 'true' : 'false' },
            cell('First seen', when(r.first_seen)),
            cell('Last seen', when(r.last_seen)),
            cell('Source address', r.source ? h('code', { class: 'reg-source' }, r.source) : 'unknown'),
            cell('Agent', r.agent ? h('code', { class: 'reg-agent' }, r.agent) : 'not given'),
            cell('Proven', r.proven ? 'yes: it proved it holds the device\'s key' : 'no: nothing proves it is your device')))))),
        regs.length > 1
          ? h('p', null, h('strong', null, 'More than one device registered this serial: '),
            'the hub will refuse a claim by serial. Enter the code shown on the right device\'s screen.')
          : null,
      ];
    } else {
      const why = check.ans.status === 501
        ? 'registrations are kept in the provisioning region (eu), not on this hub.'
        : genericError(check.ans);
      what = [h('p', { id: 'claim-registrations-unknown' },
        'The console cannot show what registered this serial: ' + why)];
    }
    replace(warning,
      h('h2', { id: 'claim-warning-title', tabindex: '-1' }, 'Check who registered serial ' + c.value + ' before you claim it'),
      h('p', null, h('strong', null, 'This serial is not attested by its manufacturer, so anyone who knows the serial ' +
        'could have registered it'), ', not only your device.'),
      what,
      h('p', null, 'Does this match your device: switched on at that time, from your network\'s address, running ' +
        'its agent? If you are not sure, do not claim by serial. ',
      h('strong', null, 'Entering the 6-character code shown on the device\'s screen is the safe way:'),
      ' only the device that shows the code gets the credentials.'),
      h('div', { class: 'actions' }, anyway, useCode));
    pending = { body, what: c };
    formActions.hidden = true;
    warning.hidden = false;
    warning.querySelector('h2').focus();
    ctx.announce('Check who registered serial ' + c.value + ' before you claim it.');
  }

  /** Shows the claimed device and follows its state live. */
  function follow(dev, what, again200) {
    const steps = h('ol', { class: 'steps' });
    const title = h('h2', { id: 'claim-result-title', tabindex: '-1' });
    const statusLine = h('p', { class: 'claim-status' });
    const link = h('a', { href: '#/devices/' + encodeURIComponent(dev.device_id) }, 'Open the device page');
    const again = h('button', { type: 'button', class: 'btn' }, 'Add another device');
    const repeated = again200
      ? h('p', { class: 'msg msg-info', id: 'claim-repeated' }, 'You had claimed this device a moment ago: this is ' +
        'the device that claim created.')
      : null;
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
      repeated, statusLine, steps, h('div', { class: 'actions' }, link, again));
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
