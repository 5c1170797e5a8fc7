#!/usr/bin/env node
// Drives Debian's Chromium (headless, through playwright-core's CDP driver,
// no browser download) against the edge, for dataplane/tests/chromium.rs.
//
//   node h3_chromium.mjs --chromium /usr/bin/chromium \
//     --origin https://localhost:PORT --cert edge.pem \
//     [--connect 127.0.0.1] [--page-path /] [--ws-path /echo] \
//     [--ws-bytes 1048576] [--timeout 30] [--deadline 150] \
//     [--netlog-dir DIR] [--features EnableWebsocketsOverHttp3] \
//     [--require-alt-svc-switch] [--skip-alt-svc]
//
// Checks, one JSON object per line on stdout ({"check", "ok", "required",
// ...details}); the exit code is 0 iff every required check passed:
//
//  page_h3      QUIC forced on the origin (--origin-to-force-quic-on): the
//               page's GET answered 200 with CDP `response.protocol` "h3".
//  websocket    In that page, `new WebSocket("wss://…/echo")`: a text
//               message, then a --ws-bytes random binary one, echoed back
//               (SHA-256 compared in the page). Chromium's net log tells
//               which protocol carried the handshake, reported as
//               `protocol`: "h3" (RFC 9220 extended CONNECT on the QUIC
//               session), "h2" (RFC 8441) or "http/1.1" (RFC 6455). The
//               check requires the echoes only; the caller asserts the
//               protocol it expects. Chromium does RFC 9220 only with the
//               feature EnableWebsocketsOverHttp3 (off by default, enabled
//               here unless --features '') and only on an HTTP/3 session it
//               already has (here: the page's); without the feature it
//               opens an HTTP/1.1 connection over TCP.
//  alt_svc_h2   A second browser, QUIC not forced on the origin: the page
//               over h2 and the `alt-svc` header it carried (must be
//               h3=":PORT"; ma=86400).
//  alt_svc_switch  The same browser's next fetches: Chromium moves to h3
//               by itself after that Alt-Svc (required with
//               --require-alt-svc-switch, else reported only).
//
// The edge certificate is trusted by its SPKI hash
// (--ignore-certificate-errors-spki-list, honoured for TCP and QUIC alike;
// playwright's ignoreHTTPSErrors is not: QUIC then fails), computed here
// from --cert. Every wait is bounded (--timeout per step, --deadline for
// the run). Chromium's net logs go to --netlog-dir (else a temporary
// directory, removed when every check passed).

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    origin: { type: 'string' },
    cert: { type: 'string' },
    'page-path': { type: 'string', default: '/' },
    'ws-path': { type: 'string', default: '/echo' },
    'ws-bytes': { type: 'string', default: String(1 << 20) },
    timeout: { type: 'string', default: '30' },
    deadline: { type: 'string', default: '150' },
    connect: { type: 'string', default: '127.0.0.1' },
    features: { type: 'string', default: 'EnableWebsocketsOverHttp3' },
    'netlog-dir': { type: 'string' },
    'skip-alt-svc': { type: 'boolean', default: false },
    'require-alt-svc-switch': { type: 'boolean', default: false },
  },
});

let failed = false;
function report(check, ok, required, details) {
  if (required && !ok) failed = true;
  process.stdout.write(JSON.stringify({ check, ok, required, ...details }) + '\n');
}

if (!args.origin || !args.cert) {
  console.error('usage: h3_chromium.mjs --chromium PATH --origin https://HOST:PORT --cert PEM');
  process.exit(2);
}
const origin = new URL(args.origin);
const hostPort = `${origin.hostname}:${origin.port}`;
const timeoutMs = Number(args.timeout) * 1000;
const wsBytes = Number(args['ws-bytes']);

// Everything below is bounded: a hard deadline ends the run whatever hangs.
const deadline = setTimeout(() => {
  report('deadline', false, true, { error: `not done within ${args.deadline} s` });
  process.exit(1);
}, Number(args.deadline) * 1000);
deadline.unref();

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  report('setup', false, true, {
    error: `playwright-core is not installed (run npm ci in ${path.dirname(new URL(import.meta.url).pathname)}): ${e.message}`,
  });
  process.exit(1);
}
if (!fs.existsSync(args.chromium)) {
  report('setup', false, true, { error: `no Chromium at ${args.chromium} (apt-get install chromium)` });
  process.exit(1);
}

const pem = fs.readFileSync(args.cert, 'utf8');
const spki = new crypto.X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
const spkiHash = crypto.createHash('sha256').update(spki).digest('base64');

const netlogDir = args['netlog-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'h3-chromium-'));
fs.mkdirSync(netlogDir, { recursive: true });
function finish() {
  if (!args['netlog-dir'] && !failed) fs.rmSync(netlogDir, { recursive: true, force: true });
  else if (failed) console.error(`Chromium net logs: ${netlogDir}`);
  process.exit(failed ? 1 : 0);
}

function baseArgs(netlog) {
  return [
    '--no-sandbox',
    `--ignore-certificate-errors-spki-list=${spkiHash}`,
    '--enable-quic',
    // RFC 9220 in Chromium sits behind the (disabled by default) feature
    // EnableWebsocketsOverHttp3; --features '' leaves it off.
    ...(args.features ? [`--enable-features=${args.features}`] : []),
    // Nothing but our own traffic: no component updates, no field trials.
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    // The origin's name goes to --connect (the edge listens there only:
    // "localhost" would also give ::1, where a forced QUIC attempt is
    // refused); every other name fails without a DNS query, so the browser
    // reaches nothing but the edge (no update or sign-in probes).
    `--host-resolver-rules=MAP ${origin.hostname} ${args.connect}, MAP * ~NOTFOUND`,
    `--log-net-log=${netlog}`,
    '--net-log-capture-mode=Default',
  ];
}

async function launch(extra, netlog) {
  return chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: [...baseArgs(netlog), ...extra],
    timeout: timeoutMs,
  });
}

function withTimeout(promise, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${args.timeout} s`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(t));
}

// Opens `url` in a fresh page with a CDP session recording every response
// and WebSocket handshake.
async function openPage(browser, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(timeoutMs);
  const cdp = await context.newCDPSession(page);
  const responses = [];
  const wsHandshakes = [];
  cdp.on('Network.responseReceived', (e) => responses.push(e));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => wsHandshakes.push(e));
  await cdp.send('Network.enable');
  const answer = await page.goto(url, { waitUntil: 'load', timeout: timeoutMs });
  return { context, page, cdp, responses, wsHandshakes, answer };
}

function headerValue(headers, name) {
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (k.toLowerCase() === name) return v;
  }
  return undefined;
}

// Which protocol carried each WebSocket handshake, from Chromium's net log:
// the event that logged the handshake's request headers names the
// transport (HTTP3_HEADERS_SENT with `:protocol: websocket` for RFC 9220,
// HTTP2_SESSION_SEND_HEADERS for RFC 8441, HTTP_TRANSACTION_SEND_REQUEST_
// HEADERS with `GET … HTTP/1.1` and `Upgrade: websocket` for RFC 6455).
function wsProtocolsFromNetLog(file) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return { error: `no net log: ${e.message}` };
  }
  let log;
  try {
    log = JSON.parse(text);
  } catch {
    // A log cut short (browser killed) lacks its closing brackets.
    try {
      log = JSON.parse(text.replace(/,?\s*$/, '') + ']}');
    } catch (e) {
      return { error: `net log unreadable: ${e.message}` };
    }
  }
  const names = Object.fromEntries(Object.entries(log.constants.logEventTypes).map(([k, v]) => [v, k]));
  const found = [];
  for (const ev of log.events ?? []) {
    const type = names[ev.type] ?? '';
    if (!/HEADERS_SENT|SEND_HEADERS|SEND_REQUEST_HEADERS/.test(type)) continue;
    const p = ev.params ?? {};
    const lines = Array.isArray(p.headers) ? p.headers.join('\n') : '';
    const all = `${p.line ?? ''}\n${lines}`;
    if (/^:protocol: websocket$/im.test(all)) {
      const protocol = /HTTP3|QUIC/.test(type) ? 'h3' : /HTTP2|SPDY/.test(type) ? 'h2' : 'unknown';
      found.push({ event: type, protocol, method: (all.match(/^:method: (.*)$/im) ?? [])[1] });
    } else if (/^upgrade: websocket$/im.test(all)) {
      found.push({ event: type, protocol: 'http/1.1', line: (p.line ?? '').trim() });
    }
  }
  return { found };
}

// ---- 1 + 2: QUIC forced on the origin: the page, then a WebSocket in it.
const netlogH3 = path.join(netlogDir, 'forced-quic.netlog.json');
let browser;
let stage = 'page_h3';
try {
  browser = await launch([`--origin-to-force-quic-on=${hostPort}`], netlogH3);
  const pageUrl = new URL(args['page-path'], origin).href;
  const s = await openPage(browser, pageUrl);
  const doc = s.responses.find((e) => e.type === 'Document');
  const protocol = doc?.response?.protocol;
  const status = s.answer?.status();
  report('page_h3', status === 200 && protocol === 'h3', true, {
    url: pageUrl,
    status,
    protocol,
    title: await s.page.title(),
    browser: browser.version(),
  });

  stage = 'websocket';
  const wsUrl = new URL(args['ws-path'], origin);
  wsUrl.protocol = 'wss:';
  let ws;
  try {
    ws = await withTimeout(
      s.page.evaluate(
        async ({ url, bytes, timeoutMs }) => {
          const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
          const sha = async (buf) => hex(await crypto.subtle.digest('SHA-256', buf));
          const sock = new WebSocket(url);
          sock.binaryType = 'arraybuffer';
          const queue = [];
          let waiter = null;
          let closed = null;
          sock.onmessage = (m) => {
            queue.push(m.data);
            if (waiter) waiter();
          };
          sock.onclose = (c) => {
            closed = `closed ${c.code} ${c.reason}`;
            if (waiter) waiter();
          };
          const next = (what) =>
            new Promise((resolve, reject) => {
              const t = setTimeout(() => reject(new Error(`${what}: no echo within ${timeoutMs} ms`)), timeoutMs);
              const poll = () => {
                if (queue.length) {
                  clearTimeout(t);
                  waiter = null;
                  resolve(queue.shift());
                } else if (closed) {
                  clearTimeout(t);
                  reject(new Error(`${what}: ${closed}`));
                }
              };
              waiter = poll;
              poll();
            });
          await new Promise((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`open: not within ${timeoutMs} ms`)), timeoutMs);
            sock.onopen = () => {
              clearTimeout(t);
              resolve();
            };
            sock.onerror = () => {
              clearTimeout(t);
              reject(new Error('open: WebSocket error'));
            };
          });
          const text = `hello over the edge ${Date.now()}`;
          sock.send(text);
          const textBack = await next('text');
          const data = new Uint8Array(bytes);
          for (let i = 0; i < bytes; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
          const sent = await sha(data);
          const t0 = performance.now();
          sock.send(data);
          const back = await next('binary');
          const ms = Math.round(performance.now() - t0);
          const got = typeof back === 'string' ? 'text' : await sha(back);
          sock.close(1000, 'done');
          return {
            text_ok: textBack === text,
            binary_ok: got === sent,
            binary_bytes: typeof back === 'string' ? back.length : back.byteLength,
            sha256: sent,
            echo_ms: ms,
            subprotocol: sock.protocol,
          };
        },
        { url: wsUrl.href, bytes: wsBytes, timeoutMs },
      ),
      'websocket',
    );
  } catch (e) {
    ws = { error: String(e.message ?? e) };
  }
  const hs = s.wsHandshakes[0]?.response;
  await s.context.close();
  await browser.close();
  browser = null;
  // The net log is complete once the browser has exited.
  const net = wsProtocolsFromNetLog(netlogH3);
  const protocols = [...new Set((net.found ?? []).map((f) => f.protocol))];
  report('websocket', !ws.error && ws.text_ok && ws.binary_ok, true, {
    url: wsUrl.href,
    ...ws,
    handshake_status: hs?.status,
    handshake_status_text: hs?.statusText,
    protocol: protocols.length === 1 ? protocols[0] : protocols.join(',') || 'unknown',
    netlog: net.error ?? net.found,
  });
} catch (e) {
  report(stage, false, true, { error: String(e.message ?? e) });
} finally {
  if (browser) await browser.close().catch(() => {});
}

// ---- 3: QUIC not forced: h2 from the same TLS listener, with Alt-Svc.
if (!args['skip-alt-svc']) {
  const netlogH2 = path.join(netlogDir, 'alt-svc.netlog.json');
  let browser2;
  stage = 'alt_svc_h2';
  try {
    // QUIC is not forced on the origin, but Chromium only accepts a QUIC
    // certificate outside its known roots for hosts named in
    // --origin-to-force-quic-on (ProofVerifierChromium's
    // hostnames_to_allow_unknown_roots; the SPKI list alone covers TCP):
    // forcing an unused port of the same host puts the host there, so
    // that QUIC reached through Alt-Svc can verify.
    browser2 = await launch([`--origin-to-force-quic-on=${origin.hostname}:1`], netlogH2);
    const pageUrl = new URL(args['page-path'], origin).href;
    const s = await openPage(browser2, pageUrl);
    const doc = s.responses.find((e) => e.type === 'Document');
    const altSvc = headerValue(doc?.response?.headers, 'alt-svc');
    const want = `h3=":${origin.port}"; ma=86400`;
    report('alt_svc_h2', doc?.response?.protocol === 'h2' && altSvc === want, true, {
      url: pageUrl,
      status: doc?.response?.status,
      protocol: doc?.response?.protocol,
      alt_svc: altSvc ?? null,
      want,
    });

    // Does Chromium follow the Alt-Svc by itself? Its first QUIC attempt
    // races the open h2 connection, so fetch again (bounded) until one
    // comes over h3.
    stage = 'alt_svc_switch';
    const seen = [];
    const until = Date.now() + Math.min(timeoutMs, 15000);
    while (Date.now() < until) {
      const url = `${pageUrl}?n=${seen.length}`;
      await withTimeout(
        s.page.evaluate((u) => fetch(u, { cache: 'no-store' }).then((r) => r.text()), url),
        'fetch',
      ).catch(() => {});
      let r;
      for (let i = 0; i < 20 && !r; i++) {
        r = s.responses.find((e) => e.response?.url === url);
        if (!r) await new Promise((ok) => setTimeout(ok, 50));
      }
      seen.push(r?.response?.protocol ?? 'none');
      if (seen.at(-1) === 'h3') break;
      await new Promise((r) => setTimeout(r, 300));
    }
    report('alt_svc_switch', seen.includes('h3'), args['require-alt-svc-switch'], { protocols: seen });
    await s.context.close();
  } catch (e) {
    report(stage, false, true, { error: String(e.message ?? e) });
  } finally {
    if (browser2) await browser2.close().catch(() => {});
  }
}

finish();
