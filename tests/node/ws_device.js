// A device played by Node's `ws` package (a client we did not write): it tunnels
// through phyproxy with CONNECT + Proxy-Authorization, authenticates to the hub with
// Basic device credentials, asks for its twin and waits for a pushed desired.patch.
// Prints one line per event ("OPEN", "RECV <json>") and exits 0 after the push.
'use strict';
const http = require('http');
const tls = require('tls');
const fs = require('fs');
const WebSocket = require('ws');

const env = (k) => {
  if (!process.env[k]) { console.error(`missing ${k}`); process.exit(2); }
  return process.env[k];
};
const proxyHost = env('PROXY_HOST'), proxyPort = Number(env('PROXY_PORT'));
const host = env('HUB_HOST'), id = env('DEVICE_ID'), secret = env('DEVICE_SECRET');
const ca = fs.readFileSync(env('CA_FILE'));
const deadline = setTimeout(() => { console.error('timeout'); process.exit(1); }, 20000);

const req = http.request({
  host: proxyHost, port: proxyPort, method: 'CONNECT', path: `${host}:443`,
  headers: { Host: `${host}:443`,
             'Proxy-Authorization': 'Basic ' + Buffer.from(`${id}:${process.env.PROXY_TOKEN || ''}`).toString('base64') },
});
req.on('error', (e) => { console.error('proxy error', e.message); process.exit(1); });
req.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('proxy answered', res.statusCode); process.exit(1); }
  const ws = new WebSocket(`wss://${host}/v1/hub`, 'phyhub.v1', {
    headers: { Authorization: 'Basic ' + Buffer.from(`${id}:${secret}`).toString('base64') },
    createConnection: () => tls.connect({ socket, servername: host, ca }),
  });
  ws.on('unexpected-response', (_req, r) => { console.error('upgrade refused', r.statusCode); process.exit(1); });
  ws.on('error', (e) => { console.error('ws error', e.message); process.exit(1); });
  ws.on('open', () => {
    console.log('OPEN ' + ws.protocol);
    ws.send(JSON.stringify({ type: 'twin.get', id: 'node-1' }));
  });
  ws.on('message', (data, isBinary) => {
    if (isBinary) { console.error('binary frame from hub'); process.exit(1); }
    const msg = JSON.parse(data.toString());
    console.log('RECV ' + JSON.stringify(msg));
    if (msg.type === 'desired.patch') {
      clearTimeout(deadline);
      ws.close(1000);
    }
  });
  ws.on('close', (code) => { console.log('CLOSE ' + code); process.exit(code === 1000 ? 0 : 1); });
});
req.end();
