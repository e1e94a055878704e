// The console API client: the session cookie (HttpOnly, set by the hub) authenticates,
// and the CSRF token from login or GET /api/v1/session — kept in memory only — goes as
// X-CSRF-Token on every request that is not GET/HEAD. Requests the console makes
// without a user action (refreshes after live events, reloads after the event stream
// reconnected, session checks) are sent with {background: true}: they carry
// X-Phy-Background: 1, which tells the hub they are not a use of the session, so a
// page that is merely open does not keep the session alive.

const state = {
  session: null,        // {tenant, user, region, csrf_token}
  onExpired: null,      // called once when an API call answers 401
};

export function session() {
  return state.session;
}

export function setSession(s) {
  state.session = s;
}

export function onExpired(fn) {
  state.onExpired = fn;
}

/** An API answer: status, parsed body (or null) and headers. ok is 2xx. */
export class Answer {
  constructor(status, data, headers) {
    this.status = status;
    this.data = data;
    this.headers = headers;
    this.ok = status >= 200 && status < 300;
  }

  get error() {
    return this.data && typeof this.data.error === 'string' ? this.data.error : null;
  }

  get message() {
    return this.data && typeof this.data.message === 'string' ? this.data.message : '';
  }

  /** Seconds of a Retry-After header, or null. */
  get retryAfter() {
    const v = this.headers.get('Retry-After');
    const n = v === null ? NaN : Number(v);
    return Number.isFinite(n) ? n : null;
  }
}

/**
 * One API call. opts: {headers, contentType, noExpire, background}. A network failure
 * gives an Answer with status 0. A 401 on anything but the session and login calls ends
 * the session (onExpired) unless noExpire is set. background marks a request no user
 * action asked for (X-Phy-Background: 1); only GET requests may be background.
 */
export async function api(method, path, body, opts = {}) {
  const headers = Object.assign({ Accept: 'application/json' }, opts.headers || {});
  if (opts.background) {
    if (method !== 'GET') throw new Error('only GET requests may be background: ' + method + ' ' + path);
    headers['X-Phy-Background'] = '1';
  }
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = opts.contentType || 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD' && state.session) {
    headers['X-CSRF-Token'] = state.session.csrf_token;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    return new Answer(0, { error: 'network', message: 'The hub cannot be reached. Check your connection and try again.' }, new Headers());
  }
  let data = null;
  const text = await res.text().catch(() => '');
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = null;
    }
  }
  const ans = new Answer(res.status, data, res.headers);
  if (res.status === 401 && !opts.noExpire && state.session && state.onExpired) {
    state.session = null;
    state.onExpired();
  }
  return ans;
}

export const get = (path, opts) => api('GET', path, undefined, opts);

/** A GET no user action asked for (a refresh after an event, a resync, a check). */
export const getBackground = (path, opts) => api('GET', path, undefined, Object.assign({}, opts, { background: true }));

/** "5 minutes" for a Retry-After in seconds. */
export function waitText(seconds) {
  if (seconds === null || seconds === undefined) return 'a few minutes';
  if (seconds < 60) return seconds + (seconds === 1 ? ' second' : ' seconds');
  const m = Math.ceil(seconds / 60);
  return m + (m === 1 ? ' minute' : ' minutes');
}

/** The text to show for a failed answer when no page-specific one fits. */
export function genericError(ans) {
  if (ans.status === 0) return ans.message;
  if (ans.status === 429) return 'Too many attempts. Try again in ' + waitText(ans.retryAfter) + '.';
  if (ans.status === 503) return 'The hub is busy or its storage is unavailable. Try again in a moment.';
  if (ans.status === 403 && ans.error === 'csrf_failed') return 'The request was refused (security token missing). Reload the page and try again.';
  if (ans.message) return ans.message + ' (' + ans.status + (ans.error ? ' ' + ans.error : '') + ')';
  return 'The hub answered ' + ans.status + '.';
}

/** Path of a device (IDs are dev_ + base32; encoded anyway). */
export function devicePath(id, suffix = '') {
  return '/api/v1/devices/' + encodeURIComponent(id) + suffix;
}
