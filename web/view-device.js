// #/devices/<id>: one device with its twin (desired and reported, with versions), a
// form to rename it (PATCH /api/v1/devices/<id>), an editor for the desired
// configuration (JSON merge patch with If-Match), tags, the last status reports, and
// revoke / reset / delete behind a confirmation dialog.

import { h, replace, timeEl, pretty, parseTime, absolute } from './dom.js';
import { api, get, genericError, devicePath } from './client.js';
import { badge, seenEl, statusOf, statusSummary, tagList, displayName } from './devicefmt.js';
import * as live from './live.js';
import { nameProblem } from './view-add.js';

const TAG_KEY = /^[A-Za-z0-9._-]{1,64}$/;

/** "k=v" lines → tags object, or throws with a message naming the line. */
function parseTags(text) {
  const tags = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error('Line ' + (i + 1) + ': write key=value.');
    const k = line.slice(0, eq).trim();
    const v = line.slice(eq + 1).trim();
    if (!TAG_KEY.test(k)) throw new Error('Line ' + (i + 1) + ': a tag key is 1 to 64 letters, digits, dots, underscores or hyphens.');
    if (Object.prototype.hasOwnProperty.call(tags, k)) throw new Error('Line ' + (i + 1) + ': the key ' + k + ' is given twice.');
    tags[k] = v;
  }
  return tags;
}

function tagsText(tags) {
  return Object.keys(tags || {}).sort().map((k) => k + '=' + tags[k]).join('\n');
}

export function render(main, route, ctx) {
  const id = route.id;
  let alive = true;
  let dev = null;          // the device with its twin
  let baseVersion = null;  // the desired version the editor edits against
  let tagsDirty = false;
  let nameDirty = false;   // the rename field holds what the user typed, not dev.name
  let histTimer = null;
  let devTimer = null;

  const head = h('div', { class: 'page-head' });
  const pageMsg = h('div', { class: 'msg', role: 'alert' });
  const facts = h('dl', { class: 'facts' });
  const renameInput = h('input', { type: 'text', id: 'rename-input', autocomplete: 'off',
    'aria-describedby': 'rename-error rename-hint' });
  const renameError = h('p', { class: 'hint field-error', id: 'rename-error', 'aria-live': 'polite' });
  const renameMsg = h('div', { class: 'msg', id: 'rename-msg', role: 'alert' });
  const renameBtn = h('button', { type: 'submit', class: 'btn', id: 'rename-save' }, 'Save name');
  const renameForm = h('form', { class: 'rename', id: 'rename-form', novalidate: true, 'aria-labelledby': 'rename-title' },
    h('h3', { id: 'rename-title' }, 'Rename'),
    h('div', { class: 'field' },
      h('label', { for: 'rename-input' }, 'Name'), renameInput, renameError,
      h('p', { class: 'hint', id: 'rename-hint' }, 'How the device is listed. Leave it empty to remove the name: ' +
        'the device is then listed by its serial number. At most 64 bytes: a plain letter or digit is 1 byte, ä or é 2, emoji 4.')),
    renameMsg,
    h('div', { class: 'actions' }, renameBtn));
  const desiredTitle = h('h3', { id: 'desired-title' });
  const reportedTitle = h('h3', { id: 'reported-title' });
  const desiredPre = h('pre', { id: 'twin-desired', tabindex: '0', 'aria-labelledby': 'desired-title' });
  const reportedPre = h('pre', { id: 'twin-reported', tabindex: '0', 'aria-labelledby': 'reported-title' });
  const sync = h('div', { class: 'msg msg-info', id: 'config-sync', role: 'status' });

  const editor = h('textarea', { id: 'desired-patch', spellcheck: 'false', rows: '8',
    'aria-describedby': 'desired-hint desired-base' });
  const baseNote = h('p', { class: 'hint', id: 'desired-base' });
  const editMsg = h('div', { class: 'msg', id: 'desired-msg', role: 'alert' });
  const applyBtn = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Apply patch');
  const resetEditor = h('button', { type: 'button', class: 'btn' }, 'Start from current configuration');
  const editForm = h('form', { novalidate: true, 'aria-labelledby': 'editor-title' },
    h('h2', { id: 'editor-title' }, 'Change desired configuration'),
    h('div', { class: 'field' },
      h('label', { for: 'desired-patch' }, 'JSON merge patch'),
      editor,
      h('p', { class: 'hint', id: 'desired-hint' },
        'A JSON object (RFC 7386 merge patch): keys you give are set, nested objects are merged, ' +
        'a key set to null is removed, keys you leave out stay as they are.'),
      baseNote),
    editMsg,
    h('div', { class: 'actions' }, applyBtn, resetEditor));

  const tagsView = h('div', { id: 'tags-view' });
  const tagsEdit = h('textarea', { id: 'tags-edit', rows: '4', spellcheck: 'false', 'aria-describedby': 'tags-hint' });
  const tagsMsg = h('div', { class: 'msg', role: 'alert' });
  const tagsForm = h('form', { novalidate: true, 'aria-labelledby': 'tags-title' },
    h('h2', { id: 'tags-title' }, 'Tags'),
    tagsView,
    h('div', { class: 'field' },
      h('label', { for: 'tags-edit' }, 'Edit tags'), tagsEdit,
      h('p', { class: 'hint', id: 'tags-hint' }, 'One key=value per line. Tags are for your filters; the device does not see them.')),
    tagsMsg,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'btn' }, 'Save tags')));

  const histBody = h('tbody');
  const histEmpty = h('p', { class: 'muted' }, 'Loading…');
  const histTable = h('table', { class: 'cards', id: 'status-history', hidden: true },
    h('caption', { class: 'visually-hidden' }, 'Last status reports, newest first'),
    h('thead', null, h('tr', null,
      h('th', { scope: 'col' }, 'Received'),
      h('th', { scope: 'col' }, 'Summary'),
      h('th', { scope: 'col' }, 'Report'))),
    histBody);

  const revokeBtn = h('button', { type: 'button', class: 'btn', id: 'act-revoke' }, 'Revoke');
  const resetBtn = h('button', { type: 'button', class: 'btn', id: 'act-reset' }, 'Reset');
  const deleteBtn = h('button', { type: 'button', class: 'btn btn-danger', id: 'act-delete' }, 'Delete');

  const content = h('div', { class: 'device-grid', hidden: true },
    h('section', { class: 'panel', 'aria-labelledby': 'facts-title' },
      h('h2', { id: 'facts-title' }, 'Device'), facts, renameForm),
    h('section', { class: 'panel', 'aria-labelledby': 'twin-title' },
      h('h2', { id: 'twin-title' }, 'Twin'),
      sync,
      h('div', { class: 'grid2' },
        h('div', null, desiredTitle, desiredPre),
        h('div', null, reportedTitle, reportedPre))),
    h('section', { class: 'panel span2' }, editForm),
    h('section', { class: 'panel span2', 'aria-labelledby': 'hist-title' },
      h('h2', { id: 'hist-title' }, 'Status history'),
      h('p', { class: 'hint' }, 'The last 20 status reports the device sent, newest first.'),
      histEmpty, h('div', { class: 'table-wrap' }, histTable)),
    h('section', { class: 'panel' }, tagsForm),
    h('section', { class: 'panel', 'aria-labelledby': 'danger-title' },
      h('h2', { id: 'danger-title' }, 'Revoke, reset or delete'),
      h('p', { class: 'hint' },
        'Revoke disconnects the device and invalidates its credentials. Reset also lets the same ' +
        'device be claimed again (it gets a new device ID). Delete removes the device, its twin and history.'),
      h('div', { class: 'actions' }, revokeBtn, resetBtn, deleteBtn)));

  replace(head, h('h1', null, 'Device'));
  main.append(head, pageMsg, content);

  function showHead() {
    replace(head,
      h('h1', { id: 'device-title' }, displayName(dev)),
      badge(dev),
      h('span', { class: 'muted' }, seenEl(dev)),
      h('span', { class: 'spacer' }),
      h('a', { class: 'btn', href: '#/devices' }, 'All devices'));
  }

  function showFacts() {
    const st = statusOf(dev);
    replace(facts,
      h('dt', null, 'Name'), h('dd', { id: 'fact-name' }, dev.name || h('span', { class: 'muted' }, 'no name')),
      h('dt', null, 'Device ID'), h('dd', { class: 'id' }, dev.device_id),
      h('dt', null, 'Serial'), h('dd', { class: 'id' }, dev.serial || '—'),
      h('dt', null, 'Status'), h('dd', { id: 'fact-status', 'data-status': st.key, 'data-presence': dev.presence }, badge(dev), ' ', h('span', { class: 'muted' }, seenEl(dev))),
      h('dt', null, 'State'), h('dd', null, stateText(dev.state)),
      h('dt', null, 'Connected'), h('dd', null, dev.connected_at ? timeEl(dev.connected_at) : 'never'),
      h('dt', null, 'Disconnected'), h('dd', null, dev.disconnected_at ? timeEl(dev.disconnected_at) : '—'),
      h('dt', null, 'Last status'), h('dd', null, dev.last_status
        ? [statusSummary(dev.last_status) || 'report', ' (', timeEl(dev.last_status_at), ')'] : 'none yet'),
      h('dt', null, 'Claimed'), h('dd', null, timeEl(dev.created_at)));
    if (!nameDirty) renameInput.value = dev.name || '';
    const revoked = st.key === 'revoked';
    revokeBtn.disabled = revoked;
    applyBtn.disabled = revoked;
    if (revoked) baseNote.textContent = 'This device is revoked: its configuration can no longer be changed.';
  }

  function stateText(s) {
    return ({
      pending_delivery: 'claimed, waiting for the device to pick up its credentials',
      provisioned: 'provisioned (credentials picked up)',
      active: 'active (has connected)',
      revoked: 'revoked',
    })[s] || s;
  }

  function showTwin() {
    const t = dev.twin || {};
    desiredTitle.textContent = 'Desired (version ' + t.desired_version + ')';
    reportedTitle.textContent = 'Reported (version ' + t.reported_version + ')';
    desiredPre.textContent = pretty(t.desired || {});
    reportedPre.textContent = pretty(t.reported || {});
    const cs = t.reported && t.reported.config_status;
    const parts = [];
    if (cs && typeof cs === 'object' && typeof cs.version === 'number') {
      const okRun = cs.exit_code === 0;
      parts.push(h('p', { id: 'config-applied', 'data-version': String(cs.version) },
        'The device applied desired version ' + cs.version +
        (okRun ? '' : (cs.timed_out ? ' but its hook timed out' : ' but its hook failed (exit code ' + cs.exit_code + ')')),
        cs.applied_at ? [' ', timeEl(cs.applied_at)] : '', '.'));
      if (typeof cs.output === 'string' && cs.output) {
        parts.push(h('p', { class: 'small' }, 'Hook output:'), h('pre', { class: 'hook-output' }, cs.output));
      }
    }
    const applied = cs && typeof cs.version === 'number' ? cs.version : null;
    if (applied === null || applied < t.desired_version) {
      parts.push(h('p', null, statusOf(dev).key === 'online'
        ? 'Waiting for the device to apply version ' + t.desired_version + '.'
        : 'The device applies version ' + t.desired_version + ' when it is online.'));
    } else if (applied === t.desired_version) {
      parts.push(h('p', null, 'The device is up to date.'));
    }
    replace(sync, parts);
    if (baseVersion === null) {
      baseVersion = t.desired_version;
      editor.value = pretty(t.desired || {});
    }
    showBase();
  }

  function showBase() {
    if (!dev || statusOf(dev).key === 'revoked') return;
    const cur = dev.twin.desired_version;
    baseNote.textContent = 'Editing against desired version ' + baseVersion + '.' +
      (cur !== baseVersion ? ' The configuration has changed since (now version ' + cur + '): applying will be refused until you reload it.' : '');
  }

  function showTags() {
    replace(tagsView, h('p', null, tagList(dev.tags)));
    if (!tagsDirty) tagsEdit.value = tagsText(dev.tags);
  }

  function showAll() {
    showHead();
    showFacts();
    showTwin();
    showTags();
    content.hidden = false;
  }

  /** Loads the device; background when no user action asked for it (events, resync). */
  async function loadDevice(background = false) {
    const ans = await get(devicePath(id), { background });
    if (!alive) return;
    if (ans.status === 404) {
      content.hidden = true;
      replace(head, h('h1', null, 'Device not found'));
      pageMsg.className = 'msg msg-error';
      replace(pageMsg, 'There is no device ', h('code', null, id), ' in this tenant (it may have been deleted). ',
        h('a', { href: '#/devices' }, 'Back to the devices'), '.');
      return;
    }
    if (!ans.ok || !ans.data) {
      pageMsg.className = 'msg msg-error';
      pageMsg.textContent = 'The device could not be loaded: ' + genericError(ans);
      return;
    }
    dev = ans.data;
    ctx.setTitle(displayName(dev));
    showAll();
  }

  async function loadHistory(background = false) {
    const ans = await get(devicePath(id, '/status-history'), { background });
    if (!alive) return;
    if (!ans.ok || !ans.data || !Array.isArray(ans.data.reports)) {
      histEmpty.hidden = false;
      histEmpty.textContent = ans.status === 404 ? 'No history.' : 'The status history could not be loaded: ' + genericError(ans);
      return;
    }
    const reports = ans.data.reports;
    histEmpty.hidden = reports.length > 0;
    histEmpty.textContent = 'No status report yet.';
    histTable.hidden = reports.length === 0;
    replace(histBody, reports.map((r) => h('tr', null,
      h('td', { 'data-label': 'Received' }, timeEl(r.at), h('span', { class: 'sub' }, absolute(parseTime(r.at)))),
      h('td', { 'data-label': 'Summary' }, statusSummary(r.status) || '—'),
      h('td', { 'data-label': 'Report' }, h('details', null, h('summary', null, 'JSON'), h('pre', null, pretty(r.status)))))));
  }

  /** A reload after an event or a reconnect (debounced): a background request. */
  function soon(which) {
    if (which === 'dev') {
      if (devTimer) return;
      devTimer = setTimeout(() => { devTimer = null; loadDevice(true); }, 200);
    } else {
      if (histTimer) return;
      histTimer = setTimeout(() => { histTimer = null; loadHistory(true); }, 1000);
    }
  }

  const off = live.on((ev) => {
    if (ev.type === 'resync') {
      soon('dev');
      soon('hist');
      return;
    }
    if (ev.data.device_id !== id) return;
    if (ev.type === 'state' && ev.data.state === 'deleted') {
      content.hidden = true;
      replace(head, h('h1', null, 'Device deleted'));
      pageMsg.className = 'msg msg-info';
      replace(pageMsg, 'This device was deleted. ', h('a', { href: '#/devices' }, 'Back to the devices'), '.');
      return;
    }
    if (ev.type === 'name') {
      // Renamed (in this tab or another): the event carries the new name.
      if (dev) {
        dev.name = typeof ev.data.name === 'string' && ev.data.name ? ev.data.name : null;
        ctx.setTitle(displayName(dev));
        showHead();
        showFacts();
      }
      return;
    }
    if (ev.type === 'status') {
      if (dev) {
        dev.last_status = ev.data.status;
        dev.last_status_at = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
        showFacts();
      }
      soon('hist');
      return;
    }
    if (ev.type === 'online' || ev.type === 'offline') {
      if (dev) {
        dev.presence = ev.type;
        showHead();
        showFacts();
      }
      ctx.announce(displayName(dev || { device_id: id }) + (ev.type === 'online' ? ' is online.' : ' went offline.'));
    }
    soon('dev');
  });

  // ---- desired configuration ----
  editForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    editMsg.className = 'msg';
    editMsg.replaceChildren();
    let patch;
    try {
      patch = JSON.parse(editor.value);
    } catch (err) {
      editor.setAttribute('aria-invalid', 'true');
      editMsg.className = 'msg msg-error';
      editMsg.textContent = 'This is not valid JSON: ' + err.message;
      editor.focus();
      return;
    }
    if (!patch || typeof patch !== 'object' || Array.isArray(patch)) {
      editor.setAttribute('aria-invalid', 'true');
      editMsg.className = 'msg msg-error';
      editMsg.textContent = 'The patch must be a JSON object, e.g. {"color": "blue"}.';
      editor.focus();
      return;
    }
    editor.setAttribute('aria-invalid', 'false');
    applyBtn.disabled = true;
    const sent = baseVersion;
    const ans = await api('PATCH', devicePath(id, '/twin/desired'), JSON.stringify(patch), {
      contentType: 'application/merge-patch+json',
      headers: { 'If-Match': '"' + sent + '"' },
    });
    if (!alive) return;
    applyBtn.disabled = false;
    if (ans.ok && ans.data && typeof ans.data.version === 'number') {
      const v = ans.data.version;
      editMsg.className = 'msg msg-ok';
      editMsg.textContent = v === sent ? 'Nothing changed: the configuration already had these values (version ' + v + ').'
        : 'Saved as desired version ' + v + '. The device applies it when it is online.';
      baseVersion = v;
      ctx.announce('Desired configuration saved as version ' + v + '.');
      await loadDevice();
      editor.value = pretty(dev && dev.twin ? dev.twin.desired : {});
      showBase();
      return;
    }
    editMsg.className = 'msg msg-error';
    if (ans.status === 412) {
      const now = ans.data && typeof ans.data.version === 'number' ? ans.data.version : '?';
      const reload = h('button', { type: 'button', class: 'btn', id: 'desired-reload' }, 'Load version ' + now);
      reload.addEventListener('click', async () => {
        await loadDevice();
        if (!dev) return;
        baseVersion = dev.twin.desired_version;
        showBase();
        editMsg.className = 'msg msg-info';
        editMsg.textContent = 'Loaded version ' + baseVersion + ' (shown under Desired). Your patch is still in the editor: check it and apply it again.';
        editor.focus();
      });
      replace(editMsg,
        h('p', null, h('strong', null, 'Not applied: someone else changed this configuration meanwhile.')),
        h('p', null, 'You edited version ' + sent + ', but the device\'s desired configuration is now at version ' + now +
          '. To avoid overwriting their change, nothing was saved. Load the current version, check your patch against it, and apply again.'),
        h('div', { class: 'actions' }, reload));
      soon('dev');
    } else if (ans.status === 413) {
      editMsg.textContent = 'Too large: the desired configuration may be at most 32 KiB and 10 levels deep.';
    } else if (ans.status === 404) {
      editMsg.textContent = 'The device no longer accepts configuration (it was revoked or deleted).';
    } else {
      editMsg.textContent = 'Not saved: ' + genericError(ans);
    }
  });

  resetEditor.addEventListener('click', () => {
    if (!dev) return;
    baseVersion = dev.twin.desired_version;
    editor.value = pretty(dev.twin.desired || {});
    editor.setAttribute('aria-invalid', 'false');
    editMsg.className = 'msg';
    editMsg.textContent = '';
    showBase();
    editor.focus();
  });

  // ---- name ----
  /** Shows (and returns) what is wrong with the typed name, '' when nothing. */
  function checkName() {
    const problem = nameProblem(renameInput.value.trim());
    renameError.textContent = problem;
    renameInput.setAttribute('aria-invalid', problem ? 'true' : 'false');
    return problem;
  }
  renameInput.addEventListener('input', () => {
    nameDirty = true;
    checkName();
  });
  renameForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    renameMsg.className = 'msg';
    renameMsg.textContent = '';
    delete renameMsg.dataset.error;
    const problem = checkName();
    if (problem) {
      renameMsg.className = 'msg msg-error';
      renameMsg.textContent = 'Not renamed: ' + problem;
      renameMsg.dataset.error = 'name';
      renameInput.focus();
      return;
    }
    const name = renameInput.value.trim();
    renameBtn.disabled = true;
    const ans = await api('PATCH', devicePath(id), { name: name || null });
    if (!alive) return;
    renameBtn.disabled = false;
    if (ans.ok && ans.data && ans.data.device_id === id) {
      nameDirty = false;
      dev = Object.assign(dev || {}, ans.data); // the answer has no twin: keep ours
      renameMsg.className = 'msg msg-ok';
      renameMsg.textContent = dev.name ? 'Renamed to ' + dev.name + '.'
        : 'Name removed: the device is listed by its serial number.';
      ctx.setTitle(displayName(dev));
      showHead();
      showFacts();
      return;
    }
    renameMsg.className = 'msg msg-error';
    renameMsg.dataset.error = ans.error || String(ans.status);
    if (ans.status === 404) renameMsg.textContent = 'Not renamed: the device no longer exists (it was deleted).';
    else if (ans.status === 400) renameMsg.textContent = 'Not renamed: ' + (ans.message || 'the hub refused the name.');
    else renameMsg.textContent = 'Not renamed: ' + genericError(ans);
    renameInput.focus();
  });

  // ---- tags ----
  tagsEdit.addEventListener('input', () => { tagsDirty = true; });
  tagsForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    tagsMsg.className = 'msg';
    tagsMsg.textContent = '';
    let tags;
    try {
      tags = parseTags(tagsEdit.value);
    } catch (err) {
      tagsMsg.className = 'msg msg-error';
      tagsMsg.textContent = err.message;
      tagsEdit.focus();
      return;
    }
    const ans = await api('PUT', devicePath(id, '/tags'), tags);
    if (!alive) return;
    if (ans.ok) {
      tagsDirty = false;
      tagsMsg.className = 'msg msg-ok';
      tagsMsg.textContent = 'Tags saved.';
      loadDevice();
    } else {
      tagsMsg.className = 'msg msg-error';
      tagsMsg.textContent = 'Tags not saved: ' + genericError(ans);
    }
  });

  // ---- revoke / reset / delete ----
  async function act(kind) {
    if (!dev) return;
    const n = displayName(dev);
    const opts = {
      revoke: { title: 'Revoke ' + n + '?', ok: 'Revoke device',
        text: 'The device is disconnected at once and its credentials stop working. It stays in the list as revoked. This cannot be undone.' },
      reset: { title: 'Reset ' + n + '?', ok: 'Reset device',
        text: 'The device is revoked and its serial number can be claimed again: the device registers anew and gets a new device ID. The old entry stays for the record.' },
      delete: { title: 'Delete ' + n + '?', ok: 'Delete device',
        text: 'The device, its twin and its status history are removed and it is disconnected. This cannot be undone.' },
    }[kind];
    const btn = { revoke: revokeBtn, reset: resetBtn, delete: deleteBtn }[kind];
    if (!(await ctx.confirm(opts))) {
      btn.focus();
      return;
    }
    const ans = kind === 'delete' ? await api('DELETE', devicePath(id))
      : await api('POST', devicePath(id, '/' + kind));
    if (!alive) return;
    if (!ans.ok) {
      pageMsg.className = 'msg msg-error';
      pageMsg.textContent = 'Not done: ' + genericError(ans);
      btn.focus();
      return;
    }
    if (kind === 'delete') {
      ctx.announce(n + ' was deleted.');
      ctx.go('#/devices');
      return;
    }
    pageMsg.className = 'msg msg-ok';
    const serial = ans.data && ans.data.serial ? ans.data.serial + ' ' : '';
    if (kind === 'revoke') pageMsg.textContent = n + ' was revoked.';
    else if (ans.data && ans.data.rearmed === false) {
      pageMsg.textContent = n + ' was revoked, but its serial ' + serial + 'could not be made claimable again: ' +
        'a newer device has claimed that serial meanwhile.';
    } else pageMsg.textContent = n + ' was reset: its serial ' + serial + 'can be claimed again.';
    ctx.announce(pageMsg.textContent);
    await loadDevice();
    pageMsg.focus();
  }
  pageMsg.tabIndex = -1;
  revokeBtn.addEventListener('click', () => act('revoke'));
  resetBtn.addEventListener('click', () => act('reset'));
  deleteBtn.addEventListener('click', () => act('delete'));

  loadDevice();
  loadHistory();
  return () => {
    alive = false;
    off();
    if (histTimer) clearTimeout(histTimer);
    if (devTimer) clearTimeout(devTimer);
  };
}
