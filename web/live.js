// Live updates: one EventSource on GET /api/v1/events (the session cookie
// authenticates it). Views subscribe with on(fn) and get {type, data} for the event
// types online, offline, reported, status, state, desired and tags; after a reconnect they get
// {type: 'resync'} because events may have been missed meanwhile.

import { get } from './client.js';

const TYPES = ['online', 'offline', 'reported', 'status', 'state', 'desired', 'tags'];
const listeners = new Set();
let source = null;
let hadError = false;
let retryTimer = null;
let indicator = null;
let onGone = null;

export function on(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(ev) {
  for (const fn of [...listeners]) {
    try {
      fn(ev);
    } catch (e) {
      // One view's failure must not stop the others; report it like any error.
      setTimeout(() => { throw e; });
    }
  }
}

function show(on, text) {
  if (!indicator) return;
  indicator.classList.toggle('on', on);
  indicator.textContent = text;
}

/** Starts the stream; el shows its state, gone() is called when the session ended. */
export function start(el, gone) {
  indicator = el;
  onGone = gone;
  connect();
}

export function stop() {
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = null;
  hadError = false;
  show(false, 'offline');
}

function connect() {
  if (source) source.close();
  const es = new EventSource('/api/v1/events');
  source = es;
  es.addEventListener('open', () => {
    show(true, 'live');
    if (hadError) emit({ type: 'resync' });
    hadError = false;
  });
  for (const type of TYPES) {
    es.addEventListener(type, (msg) => {
      let data = null;
      try {
        data = JSON.parse(msg.data);
      } catch (e) {
        return;
      }
      if (data && typeof data.device_id === 'string') emit({ type, data });
    });
  }
  es.addEventListener('error', () => {
    if (source !== es) return;
    hadError = true;
    show(false, 'reconnecting…');
    if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // Closed for good (e.g. 401): is the session still there?
    es.close();
    source = null;
    get('/api/v1/session', { noExpire: true }).then((ans) => {
      if (ans.status === 401) {
        show(false, 'offline');
        if (onGone) onGone();
        return;
      }
      retryTimer = setTimeout(connect, 3000);
    });
  });
}
