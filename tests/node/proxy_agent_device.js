// A device whose proxy support is a library we did not write either: `ws` over
// `https-proxy-agent`, the way a Node application would reach a hub through an
// HTTP proxy. The identity and the proxy token go in the proxy URL's user info, the
// agent sends them as Proxy-Authorization. Prints "OPEN", then the twin's id, and
// exits 0; any failure exits 1.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');
const { HttpsProxyAgent } = require('https-proxy-agent');

const env = (k) => {
  if (!process.env[k]) { console.error(`missing ${k}`); process.exit(2); }
  return process.env[k];
};
const host = env('HUB_HOST'), id = env('DEVICE_ID'), secret = env('DEVICE_SECRET');
const proxy = `http://${encodeURIComponent(id)}:${encodeURIComponent(process.env.PROXY_TOKEN || '')}` +
  `@${env('PROXY_HOST')}:${env('PROXY_PORT')}`;
const deadline = setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000);

const ws = new WebSocket(`wss://${host}/v1/hub`, 'phyhub.v1', {
  agent: new HttpsProxyAgent(proxy, { ca: fs.readFileSync(env('CA_FILE')) }),
  ca: fs.readFileSync(env('CA_FILE')),
  headers: { Authorization: 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64') },
});
ws.on('unexpected-response', (_req, r) => { console.error('upgrade refused', r.statusCode); process.exit(1); });
ws.on('error', (e) => { console.error('ws error', e.message); process.exit(1); });
ws.on('open', () => {
  console.log('OPEN ' + ws.protocol);
  ws.send(JSON.stringify({ type: 'twin.get', id: 7 }));
});
ws.on('message', (data) => {
  const msg = JSON.parse(data.toString());
  if (msg.type !== 'twin') return;
  // The id comes back as it was sent: a number.
  console.log('TWIN ' + JSON.stringify(msg.id) + ' ' + msg.twin.device_id);
  clearTimeout(deadline);
  ws.close(1000);
});
ws.on('close', (code) => { console.log('CLOSE ' + code); process.exit(0); });
