// #/login: tenant, user, password → POST /api/v1/login.

import { h } from './dom.js';
import { api, genericError, waitText } from './client.js';

const REMEMBER = 'phystack.login';

export function render(main, route, ctx) {
  let remembered = {};
  try {
    remembered = JSON.parse(localStorage.getItem(REMEMBER) || '{}') || {};
  } catch (e) {
    remembered = {};
  }
  const msg = h('div', { class: 'msg', id: 'login-msg', role: 'alert' });
  const notice = ctx.takeLoginNotice();
  const info = h('div', { class: 'msg msg-info', role: 'status' }, notice);
  if (!notice) info.hidden = true;
  const tenant = h('input', { type: 'text', id: 'tenant', name: 'tenant', autocomplete: 'organization',
    required: true, spellcheck: 'false', autocapitalize: 'none', value: remembered.tenant || '' });
  const user = h('input', { type: 'text', id: 'user', name: 'user', autocomplete: 'username',
    required: true, spellcheck: 'false', autocapitalize: 'none', value: remembered.user || '' });
  const password = h('input', { type: 'password', id: 'password', name: 'password',
    autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Log in');

  const form = h('form', { class: 'panel login', novalidate: true, 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Log in to PhyStack'),
    info,
    h('div', { class: 'field' }, h('label', { for: 'tenant' }, 'Tenant'), tenant),
    h('div', { class: 'field' }, h('label', { for: 'user' }, 'User'), user),
    h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password'), password),
    msg,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    msg.className = 'msg';
    msg.textContent = '';
    info.hidden = true;
    const body = { tenant: tenant.value.trim(), user: user.value.trim(), password: password.value };
    const missing = [['tenant', tenant], ['user', user], ['password', password]].filter(([, el]) => !el.value);
    for (const [, el] of [['tenant', tenant], ['user', user], ['password', password]]) {
      el.setAttribute('aria-invalid', el.value ? 'false' : 'true');
    }
    if (missing.length) {
      msg.className = 'msg msg-error';
      msg.textContent = 'Enter your ' + missing.map(([n]) => n).join(', ') + '.';
      missing[0][1].focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    const ans = await api('POST', '/api/v1/login', body, { noExpire: true });
    submit.disabled = false;
    submit.textContent = 'Log in';
    if (ans.ok && ans.data && ans.data.csrf_token) {
      try {
        localStorage.setItem(REMEMBER, JSON.stringify({ tenant: body.tenant, user: body.user }));
      } catch (err) { /* storage may be off */ }
      password.value = '';
      ctx.announce('Logged in as ' + ans.data.user + ' of ' + ans.data.tenant + '.');
      ctx.loggedIn(ans.data);
      return;
    }
    msg.className = 'msg msg-error';
    if (ans.status === 401) {
      msg.textContent = 'The tenant, user or password is not right. Check them and try again.';
    } else if (ans.status === 429) {
      msg.textContent = 'Too many failed logins for this account. For your security, logging in is ' +
        'paused: try again in ' + waitText(ans.retryAfter) + '.';
    } else {
      msg.textContent = genericError(ans);
    }
    password.value = '';
    password.focus();
  });

  main.append(form);
  (tenant.value ? (user.value ? password : user) : tenant).focus();
  return null;
}
