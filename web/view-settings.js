// #/settings: the tenant's policy for claims by serial number (GET/PATCH
// /api/v1/tenant), its API tokens (GET/POST /api/v1/tokens, DELETE
// /api/v1/tokens/<id>; a new token is shown once) and the user's password
// (POST /api/v1/password).

import { h, replace, timeEl, absolute, parseTime, newId } from './dom.js';
import { api, get, session, genericError, waitText } from './client.js';

const DAYS_DEFAULT = 90;
const DAYS_MAX = 3650;
const PASSWORD_MIN = 12;

/** Sets a message element (role=alert) to kind ('ok', 'error', 'info') and content. */
function say(el, kind, ...content) {
  el.className = 'msg msg-' + kind;
  replace(el, ...content);
}

function unsay(el) {
  el.className = 'msg';
  el.replaceChildren();
  delete el.dataset.error;
}

const POLICY_TEXT = {
  attested: 'only serials the manufacturer attested',
  any: 'any serial (whoever registered it first)',
};

export function render(main, route, ctx) {
  let alive = true;

  main.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Settings')),
    h('p', { class: 'muted' }, 'Settings of tenant ', h('strong', null, session() ? session().tenant : ''),
      ' and of your account.'),
    policySection(), tokensSection(), passwordSection());

  // ---- claims by serial number ----
  function policySection() {
    const name = 'serial-claims';
    const attested = h('input', { type: 'radio', name, id: 'policy-attested', value: 'attested',
      'aria-describedby': 'policy-attested-hint' });
    const any = h('input', { type: 'radio', name, id: 'policy-any', value: 'any',
      'aria-describedby': 'policy-any-hint' });
    const current = h('p', { class: 'hint', id: 'policy-current' });
    const msg = h('div', { class: 'msg', id: 'policy-msg', role: 'alert' });
    const save = h('button', { type: 'submit', class: 'btn btn-primary', id: 'policy-save', disabled: true }, 'Save');
    let saved = null;

    const form = h('form', { class: 'panel', id: 'settings-policy', novalidate: true, 'aria-labelledby': 'policy-title' },
      h('h2', { id: 'policy-title' }, 'Claims by serial number'),
      h('p', null, 'A device can be claimed by the 6-character code shown on its screen, or by the serial number ' +
        'printed on it. Anyone who reads the label knows the serial, so this decides which serials may be claimed by ' +
        'serial number alone. Claims by code always work.'),
      h('fieldset', { class: 'choices' },
        h('legend', null, 'Which serials may be claimed by serial number'),
        h('div', { class: 'choice' },
          h('label', { for: 'policy-attested' }, attested, ' Attested serials only (recommended, the default)'),
          h('p', { class: 'hint', id: 'policy-attested-hint' },
            'Only serials the manufacturer attested can be claimed by serial. Such a device proves it holds its ' +
            'key before it gets its credentials, so nobody else can pose as it. Every other device is claimed by ' +
            'the code on its screen.')),
        h('div', { class: 'choice' },
          h('label', { for: 'policy-any' }, any, ' Any serial'),
          h('p', { class: 'hint', id: 'policy-any-hint' },
            'Every serial can be claimed by serial number. For a serial that is not attested, whoever registers ' +
            'that serial first gets the device\'s credentials when you claim it by serial: anyone who knows the ' +
            'serial could. The console shows who registered it before you claim; the code on the device\'s ' +
            'screen remains the safe way.'))),
      current, msg,
      h('div', { class: 'actions' }, save));

    function chosen() {
      return attested.checked ? 'attested' : any.checked ? 'any' : null;
    }
    function showSaved(policy) {
      saved = policy;
      attested.checked = policy === 'attested';
      any.checked = policy === 'any';
      current.textContent = 'Now: ' + (POLICY_TEXT[policy] || policy) + ' can be claimed by serial number.';
      current.dataset.policy = policy;
      save.disabled = true;
    }
    function changed() {
      save.disabled = chosen() === null || chosen() === saved;
    }
    attested.addEventListener('change', changed);
    any.addEventListener('change', changed);

    (async () => {
      const ans = await get('/api/v1/tenant');
      if (!alive) return;
      if (!ans.ok || !ans.data || typeof ans.data.serial_claims !== 'string') {
        say(msg, 'error', 'The setting could not be loaded: ' + genericError(ans));
        return;
      }
      showSaved(ans.data.serial_claims);
    })();

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      unsay(msg);
      const policy = chosen();
      if (!policy || policy === saved) return;
      if (policy === 'any') {
        const ok = await ctx.confirm({
          title: 'Allow claims by serial of any serial?',
          text: 'A serial that is not attested can be registered by anyone who knows it. When someone in your ' +
            'tenant then claims it by serial number, the credentials go to whoever registered it first, which ' +
            'may not be the real device. Only do this for devices without a screen, and check who registered ' +
            'a serial before claiming it.',
          ok: 'Allow any serial',
        });
        if (!alive) return;
        if (!ok) {
          any.focus();
          return;
        }
      }
      save.disabled = true;
      save.textContent = 'Saving…';
      const ans = await api('PATCH', '/api/v1/tenant', { serial_claims: policy });
      if (!alive) return;
      save.textContent = 'Save';
      if (ans.ok && ans.data && typeof ans.data.serial_claims === 'string') {
        showSaved(ans.data.serial_claims);
        say(msg, 'ok', 'Saved: ' + POLICY_TEXT[ans.data.serial_claims] + ' can now be claimed by serial number.');
        ctx.announce(msg.textContent);
        return;
      }
      changed();
      say(msg, 'error', 'Not saved: ' + genericError(ans));
      msg.dataset.error = ans.error || String(ans.status);
    });
    return form;
  }

  // ---- API tokens ----
  function tokensSection() {
    const tbody = h('tbody');
    const table = h('table', { class: 'cards', id: 'tokens-table', hidden: true },
      h('caption', { class: 'visually-hidden' }, 'API tokens of the tenant'),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'ID'),
        h('th', { scope: 'col' }, 'User'),
        h('th', { scope: 'col' }, 'Created'),
        h('th', { scope: 'col' }, 'Expires'),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      tbody);
    const empty = h('p', { class: 'muted', id: 'tokens-empty', hidden: true }, 'The tenant has no API tokens.');
    const listMsg = h('div', { class: 'msg', id: 'tokens-msg', role: 'alert' });
    const days = h('input', { type: 'number', id: 'token-days', min: '1', max: String(DAYS_MAX), step: '1',
      inputmode: 'numeric', value: String(DAYS_DEFAULT), required: true, 'aria-describedby': 'token-days-hint' });
    const createMsg = h('div', { class: 'msg', id: 'token-create-msg', role: 'alert' });
    const create = h('button', { type: 'submit', class: 'btn btn-primary', id: 'token-create' }, 'Create token');
    const fresh = h('div', { class: 'new-token', id: 'token-new', hidden: true });

    const form = h('form', { class: 'token-create', novalidate: true, 'aria-labelledby': 'token-create-title' },
      h('h3', { id: 'token-create-title' }, 'Create token'),
      h('div', { class: 'field narrow' },
        h('label', { for: 'token-days' }, 'Valid for (days)'), days,
        h('p', { class: 'hint', id: 'token-days-hint' }, '1 to ' + DAYS_MAX + ' days; ' + DAYS_DEFAULT +
          ' unless you change it. The token acts as you (' + (session() ? session().user : 'your user') +
          ') until it expires or is revoked.')),
      createMsg,
      h('div', { class: 'actions' }, create));

    const section = h('section', { class: 'panel', id: 'settings-tokens', 'aria-labelledby': 'tokens-title' },
      h('h2', { id: 'tokens-title' }, 'API tokens'),
      h('p', null, 'Programs such as phyctl and your scripts use an API token instead of a password. Every token ' +
        'of the tenant is listed here by its ID (the token itself is never shown again after it was created).'),
      listMsg, h('div', { class: 'table-wrap' }, table), empty, fresh, form);

    function row(t) {
      const revoke = h('button', { type: 'button', class: 'btn btn-small', 'data-revoke': t.id,
        'aria-label': 'Revoke token ' + t.id }, 'Revoke');
      revoke.addEventListener('click', () => revokeToken(t, revoke));
      const exp = parseTime(t.expires_at);
      return h('tr', { 'data-token-id': t.id, 'data-expired': t.expired ? 'true' : 'false' },
        h('td', { 'data-label': 'ID', class: 'id' }, t.id),
        h('td', { 'data-label': 'User' }, t.user || '—'),
        h('td', { 'data-label': 'Created', class: 'when' }, h('span', null, absolute(parseTime(t.created_at)) || '—',
          t.created_at ? h('span', { class: 'sub' }, timeEl(t.created_at)) : null)),
        h('td', { 'data-label': 'Expires', class: 'when' }, h('span', null,
          t.expired ? h('span', { class: 'badge st-revoked', 'data-expired': 'true' }, 'Expired') : null,
          exp === null ? 'never' : [t.expired ? ' ' : '', absolute(exp)],
          exp !== null && !t.expired ? h('span', { class: 'sub' }, timeEl(t.expires_at)) : null)),
        h('td', { 'data-label': 'Actions' }, revoke));
    }

    async function load() {
      const ans = await get('/api/v1/tokens');
      if (!alive) return;
      if (!ans.ok || !ans.data || !Array.isArray(ans.data.tokens)) {
        say(listMsg, 'error', 'The tokens could not be loaded: ' + genericError(ans));
        return;
      }
      replace(tbody, ans.data.tokens.map(row));
      table.hidden = ans.data.tokens.length === 0;
      empty.hidden = ans.data.tokens.length !== 0;
    }

    async function revokeToken(t, btn) {
      unsay(listMsg);
      const ok = await ctx.confirm({
        title: 'Revoke token ' + t.id + '?',
        text: 'Programs that use this token (of ' + (t.user || 'a removed user') + ') can no longer reach the API ' +
          'with it. This cannot be undone: they need a new token.',
        ok: 'Revoke token',
      });
      if (!alive) return;
      if (!ok) {
        btn.focus();
        return;
      }
      btn.disabled = true;
      const ans = await api('DELETE', '/api/v1/tokens/' + encodeURIComponent(t.id));
      if (!alive) return;
      if (ans.status === 204 || ans.status === 404) {
        say(listMsg, 'ok', ans.status === 204 ? 'Token ' + t.id + ' was revoked.' : 'Token ' + t.id + ' was revoked already.');
        ctx.announce(listMsg.textContent);
        await load();
        if (alive) section.querySelector('h2').focus();
        return;
      }
      btn.disabled = false;
      say(listMsg, 'error', 'Token ' + t.id + ' was not revoked: ' + genericError(ans));
      btn.focus();
    }

    function showNew(data) {
      const fieldId = newId('token-value');
      const value = h('input', { type: 'text', id: fieldId, class: 'mono', readonly: true, value: data.token,
        autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'token-new-warning token-copy-msg' });
      const copy = h('button', { type: 'button', class: 'btn', id: 'token-copy' }, 'Copy');
      const copyMsg = h('p', { class: 'hint', id: 'token-copy-msg', 'aria-live': 'polite' },
        'Select the field and copy it (Ctrl+C, or ⌘C on a Mac), or use Copy.');
      const done = h('button', { type: 'button', class: 'btn' }, 'I have copied it');
      value.addEventListener('focus', () => value.select());
      copy.addEventListener('click', async () => {
        value.focus();
        value.select();
        try {
          await navigator.clipboard.writeText(data.token);
          copyMsg.textContent = 'Copied to the clipboard.';
        } catch (err) {
          copyMsg.textContent = 'The browser did not allow copying: the token is selected, press Ctrl+C (⌘C on a Mac).';
        }
      });
      done.addEventListener('click', () => {
        fresh.hidden = true;
        fresh.replaceChildren();
        days.focus();
      });
      const exp = parseTime(data.expires_at);
      replace(fresh,
        h('h3', { id: 'token-new-title', tabindex: '-1' }, 'New token ' + data.id),
        h('div', { class: 'msg msg-warn', id: 'token-new-warning' },
          h('p', null, h('strong', null, 'Copy this token now: it will not be shown again.'),
            ' The hub keeps only a fingerprint of it. Whoever has it can use the API as you' +
            (exp !== null ? ' until ' + absolute(exp) : '') + ', so keep it like a password.')),
        h('div', { class: 'field' },
          h('label', { for: fieldId }, 'Token'),
          h('div', { class: 'copy-row' }, value, copy), copyMsg),
        h('div', { class: 'actions' }, done));
      fresh.hidden = false;
      fresh.querySelector('h3').focus();
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      unsay(createMsg);
      const raw = days.value.trim();
      const n = Number(raw);
      if (!/^\d+$/.test(raw) || n < 1 || n > DAYS_MAX) {
        days.setAttribute('aria-invalid', 'true');
        say(createMsg, 'error', 'Enter a whole number of days from 1 to ' + DAYS_MAX + '.');
        createMsg.dataset.error = 'days';
        days.focus();
        return;
      }
      days.setAttribute('aria-invalid', 'false');
      create.disabled = true;
      create.textContent = 'Creating…';
      const ans = await api('POST', '/api/v1/tokens', { expires_in_days: n });
      if (!alive) return;
      create.disabled = false;
      create.textContent = 'Create token';
      if (ans.status === 201 && ans.data && typeof ans.data.token === 'string') {
        days.value = String(DAYS_DEFAULT);
        showNew(ans.data);
        ctx.announce('Token ' + ans.data.id + ' created. Copy it now: it will not be shown again.');
        load();
        return;
      }
      say(createMsg, 'error', 'No token was created: ' + genericError(ans));
      createMsg.dataset.error = ans.error || String(ans.status);
    });

    load();
    return section;
  }

  // ---- password ----
  function passwordSection() {
    const s = session();
    const user = h('input', { type: 'text', id: 'pw-user', autocomplete: 'username', readonly: true, hidden: true,
      value: s ? s.user : '', 'aria-hidden': 'true', tabindex: '-1' });
    const current = h('input', { type: 'password', id: 'pw-current', autocomplete: 'current-password', required: true });
    const fresh = h('input', { type: 'password', id: 'pw-new', autocomplete: 'new-password', required: true,
      'aria-describedby': 'pw-new-hint' });
    const repeat = h('input', { type: 'password', id: 'pw-repeat', autocomplete: 'new-password', required: true });
    const msg = h('div', { class: 'msg', id: 'pw-msg', role: 'alert' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'pw-save' }, 'Change password');
    const form = h('form', { class: 'panel', id: 'settings-password', novalidate: true, 'aria-labelledby': 'pw-title' },
      h('h2', { id: 'pw-title' }, 'Password'),
      h('p', null, 'Changes the password of ', h('strong', null, s ? s.user : 'your user'),
        '. Your sessions in other browsers end; this one stays logged in. API tokens keep working: revoke them ' +
        'above if they may be known to someone else.'),
      user,
      h('div', { class: 'field' }, h('label', { for: 'pw-current' }, 'Current password'), current),
      h('div', { class: 'field' }, h('label', { for: 'pw-new' }, 'New password'), fresh,
        h('p', { class: 'hint', id: 'pw-new-hint' }, 'At least ' + PASSWORD_MIN + ' characters. A few unrelated ' +
          'words make a password that is long and easy to remember.')),
      h('div', { class: 'field' }, h('label', { for: 'pw-repeat' }, 'Repeat the new password'), repeat),
      msg,
      h('div', { class: 'actions' }, submit));

    function fail(text, el, code) {
      say(msg, 'error', text);
      msg.dataset.error = code;
      if (el) {
        el.setAttribute('aria-invalid', 'true');
        el.focus();
      }
    }

    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      unsay(msg);
      for (const el of [current, fresh, repeat]) el.setAttribute('aria-invalid', 'false');
      if (!current.value) return fail('Enter your current password.', current, 'current');
      if ([...fresh.value].length < PASSWORD_MIN) {
        return fail('The new password needs at least ' + PASSWORD_MIN + ' characters (it has ' +
          [...fresh.value].length + ').', fresh, 'short');
      }
      if (fresh.value !== repeat.value) {
        repeat.value = '';
        return fail('The two new passwords are not the same. Type the new password again.', repeat, 'mismatch');
      }
      if (fresh.value === current.value) {
        return fail('The new password is the same as the current one.', fresh, 'same');
      }
      submit.disabled = true;
      submit.textContent = 'Changing…';
      // A wrong current password answers 401 too: that one must not end the session.
      const ans = await api('POST', '/api/v1/password', { current: current.value, new: fresh.value }, { noExpire: true });
      if (!alive) return;
      submit.disabled = false;
      submit.textContent = 'Change password';
      if (ans.status === 204) {
        for (const el of [current, fresh, repeat]) el.value = '';
        say(msg, 'ok', 'Your password was changed. Your sessions in other browsers have ended; this one stays ' +
          'logged in. Use the new password next time you log in.');
        ctx.announce('Password changed.');
        return;
      }
      if (ans.status === 401 && ans.error === 'invalid_login') {
        current.value = '';
        return fail('The current password is not right. Nothing was changed.', current, 'invalid_login');
      }
      if (ans.status === 401) {
        ctx.sessionEnded();
        return;
      }
      if (ans.status === 429) {
        return fail('Too many wrong passwords for your account. For your security, changing the password is ' +
          'paused: try again in ' + waitText(ans.retryAfter) + '.', null, 'too_many_attempts');
      }
      if (ans.status === 400) {
        return fail('The hub refused the new password: ' + (ans.message || 'check it and try again.'), fresh,
          ans.error || 'bad_request');
      }
      return fail('The password was not changed: ' + genericError(ans), null, ans.error || String(ans.status));
    });
    return form;
  }

  return () => { alive = false; };
}
