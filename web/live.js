// Live updates: one EventSource on GET /api/v1/events (the session cookie
// authenticates it). Views subscribe with on(fn) and get {type, data} for the event
// types online, offline, reported, status, state, desired, tags and name; after a
// reconnect they get {type: 'resync'} because events may have been missed meanwhile.
//
// A reconnected stream is authenticated by whatever session cookie the browser holds
// now, which may belong to another user or tenant (a logout and a new login in another
// tab). So after a reconnect no event reaches the views until the app's verify()
// has compared the hub's session with the one this tab shows: 'ok' (same identity:
// resync), 'handled' (the app switched identity or went to the login page: no resync)
// or 'retry' (could not tell: drop the stream and connect again later).
import { getBackground } from './client.js';

const TYPES = ['online', 'offline', 'reported', 'status', 'state', 'desired', 'tags', 'name'];
const listeners = new Set();
let source = null;
let hadError = false;
let retryTimer = null;
let indicator = null;
let onGone = null;
let verify = null;
let paused = false;  // a reconnected stream until verify() answered
let checkSeq = 0;
let generation = 0;  // bumped by stop(): answers for an earlier start are ignored
const RETRY_MIN = 3000;
const RETRY_MAX = 60000;
let retryDelay = RETRY_MIN; // doubles while connecting keeps failing for good (e.g. 429)

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

/**
 * Starts the stream; el shows its state, gone() is called when the session ended,
 * check() (async, 'ok' | 'handled' | 'retry') verifies the session after a reconnect.
 */
export function start(el, gone, check) {
  stop();
  indicator = el;
  onGone = gone;
  verify = check || null;
  connect();
}

export function stop() {
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = null;
  if (source) source.close();
  source = null;
  hadError = false;
  paused = false;
  checkSeq += 1;
  generation += 1;
  retryDelay = RETRY_MIN;
  show(false, 'offline');
}

/** Closes the stream and connects again in a few seconds (the next open verifies). */
function later() {
  if (source) source.close();
  source = null;
  hadError = true;
  paused = false;
  show(false, 'reconnecting…');
  if (retryTimer) clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, nextDelay());
}

function nextDelay() {
  const d = retryDelay;
  retryDelay = Math.min(retryDelay * 2, RETRY_MAX);
  return d;
}

function connect() {
  retryTimer = null;
  if (source) source.close();
  const es = new EventSource('/api/v1/events');
  source = es;
  es.addEventListener('open', () => {
    if (source !== es) return;
    show(true, 'live');
    if (!hadError) {
      retryDelay = RETRY_MIN;
      return;
    }
    hadError = false;
    if (!verify) {
      retryDelay = RETRY_MIN;
      emit({ type: 'resync' });
      return;
    }
    paused = true;
    const seq = ++checkSeq;
    Promise.resolve()
      .then(() => verify())
      .catch((e) => {
        setTimeout(() => { throw e; });
        return 'retry';
      })
      .then((verdict) => {
        if (seq !== checkSeq || source !== es) return; // stopped or reconnected meanwhile
        paused = false;
        if (verdict === 'retry') {
          later();
          return;
        }
        retryDelay = RETRY_MIN;
        if (verdict === 'ok') emit({ type: 'resync' });
      });
  });
  for (const type of TYPES) {
    es.addEventListener(type, (msg) => {
      if (source !== es || paused) return; // not verified yet: the resync reloads anyway
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
    paused = false;
    checkSeq += 1; // a verification still running is for a stream that failed
    show(false, 'reconnecting…');
    if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // Closed for good (e.g. 401): is the session still there?
    es.close();
    source = null;
    const gen = generation;
    getBackground('/api/v1/session', { noExpire: true }).then((ans) => {
      if (gen !== generation || source !== null || retryTimer !== null) return; // stopped or restarted meanwhile
      if (ans.status === 401) {
        show(false, 'offline');
        if (onGone) onGone();
        return;
      }
      retryTimer = setTimeout(connect, nextDelay());
    });
  });
}
