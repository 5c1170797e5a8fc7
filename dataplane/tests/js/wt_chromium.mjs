#!/usr/bin/env node
// Drives Debian's Chromium (headless, through playwright-core's CDP driver,
// no browser download) to open WebTransport sessions through the edge, for
// dataplane/tests/webtransport_chromium.rs. The edge relays them to a
// WebTransport upstream such as tests/py/wt_server.py (paths /echo and
// /close?code=C&reason=R).
//
//   node wt_chromium.mjs --chromium /usr/bin/chromium \
//     --edge https://localhost:PORT --cert edge.pem \
//     [--connect 127.0.0.1] [--echo-path /echo] [--bidi-bytes 65536] \
//     [--uni-bytes 16384] [--datagrams 20] [--server-close 7:bye] \
//     [--client-close 42:done] [--timeout 30] [--deadline 120] \
//     [--netlog-dir DIR]
//
// The page: a secure context is required for `WebTransport`, and
// http://127.0.0.1 is one by definition ("potentially trustworthy"), so the
// script serves a tiny page itself (node:http on 127.0.0.1, any port) and
// opens every session from it. The edge is only ever reached by the
// WebTransport sessions: QUIC to --connect, authority and SNI the --edge
// host (the tunnel's hostname, "localhost" in the tests).
//
// Checks, one JSON object per line on stdout ({"check", "ok", "required",
// ...details}); the exit code is 0 iff every required check passed:
//
//  page            the page loaded, `isSecureContext` and `WebTransport` there.
//  ready           `new WebTransport("https://HOST:PORT/echo")`: `ready`
//                  resolved (the extended CONNECT answered 200 through the
//                  edge).
//  bidi_echo       createBidirectionalStream(): --bidi-bytes random bytes +
//                  FIN written while reading; the echo (until FIN) must have
//                  the same length and SHA-256 (compared in the page).
//  uni_echo        createUnidirectionalStream(): --uni-bytes random bytes +
//                  FIN; the server echoes them on a uni stream of its own,
//                  read from `incomingUnidirectionalStreams` (same SHA-256).
//  datagram_echo   --datagrams datagrams `dgram <i> <nonce>` sent; the echoes
//                  that come back within a bounded wait are counted (≥ 1
//                  required: datagrams are unreliable; each echo must be one
//                  of those sent).
//  server_close    a second session to /close?code=C&reason=R (--server-close
//                  C:R), one bidi echo, then `closed` must resolve with
//                  {closeCode: C, reason: R} (the upstream's
//                  WT_CLOSE_SESSION through the edge).
//  client_close    a third session to --echo-path: the page calls
//                  `close({closeCode, reason})` (--client-close C:R);
//                  `closed` must resolve. What arrived upstream is for the
//                  caller to check (wt_server.py logs `close_session code=C
//                  reason=<hex of R>`).
//
// Certificate: the edge's is trusted by its SPKI hash
// (--ignore-certificate-errors-spki-list, computed here from --cert), as in
// h3_chromium.mjs. Chromium's WebTransport client (a dedicated QUIC
// connection) verifies through the same certificate verifier as its HTTP
// stack, so the allow-list covers it, but, as for any QUIC connection, a
// certificate outside the known roots is accepted only for a host named in
// --origin-to-force-quic-on (else CERTIFICATE_VERIFY_FAILED in the QUIC
// handshake): the edge's host:port is named there. `serverCertificateHashes`
// is not used: it requires an ECDSA certificate valid for at most 14 days,
// and the tests' edge certificate (rcgen's simple self-signed) is valid for
// centuries. Every wait is bounded (--timeout per step, --deadline for the
// run). Chromium's net log goes to --netlog-dir (else a temporary
// directory, kept and named on stderr when a check failed).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    edge: { type: 'string' },
    cert: { type: 'string' },
    connect: { type: 'string', default: '127.0.0.1' },
    'echo-path': { type: 'string', default: '/echo' },
    'bidi-bytes': { type: 'string', default: String(64 << 10) },
    'uni-bytes': { type: 'string', default: String(16 << 10) },
    datagrams: { type: 'string', default: '20' },
    'server-close': { type: 'string', default: '7:bye' },
    'client-close': { type: 'string', default: '42:done' },
    timeout: { type: 'string', default: '30' },
    deadline: { type: 'string', default: '120' },
    'netlog-dir': { type: 'string' },
  },
});

let failed = false;
function report(check, ok, required, details) {
  if (required && !ok) failed = true;
  process.stdout.write(JSON.stringify({ check, ok, required, ...details }) + '\n');
}

if (!args.edge || !args.cert) {
  console.error('usage: wt_chromium.mjs --chromium PATH --edge https://HOST:PORT --cert PEM');
  process.exit(2);
}
const edge = new URL(args.edge);
const timeoutMs = Number(args.timeout) * 1000;
function codeReason(s, what) {
  const i = s.indexOf(':');
  const code = Number(i < 0 ? s : s.slice(0, i));
  if (!Number.isInteger(code) || code < 0) {
    console.error(`--${what}: want CODE:REASON, got ${s}`);
    process.exit(2);
  }
  return { code, reason: i < 0 ? '' : s.slice(i + 1) };
}
const serverClose = codeReason(args['server-close'], 'server-close');
const clientClose = codeReason(args['client-close'], 'client-close');

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

const netlogDir = args['netlog-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'wt-chromium-'));
fs.mkdirSync(netlogDir, { recursive: true });
const netlog = path.join(netlogDir, 'webtransport.netlog.json');

// The page's origin: http://127.0.0.1:PORT is a secure context.
const PAGE = '<!doctype html><html><head><title>switchyard wt</title></head><body>wt</body></html>';
const pageServer = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': PAGE.length });
  res.end(PAGE);
});
await new Promise((resolve, reject) => {
  pageServer.once('error', reject);
  pageServer.listen(0, '127.0.0.1', resolve);
});
const pageUrl = `http://127.0.0.1:${pageServer.address().port}/`;

function withTimeout(promise, what, ms = timeoutMs) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// Page-side helpers, installed once; every wait in them is bounded by `ms`.
function installHelpers() {
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const bounded = (p, what, ms) => {
    let t;
    return Promise.race([
      p,
      new Promise((_, reject) => {
        t = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
      }),
    ]).finally(() => clearTimeout(t));
  };
  const random = (n) => {
    const data = new Uint8Array(n);
    for (let i = 0; i < n; i += 65536) crypto.getRandomValues(data.subarray(i, Math.min(n, i + 65536)));
    return data;
  };
  // Reads a ReadableStream to its end; returns the bytes.
  const readAll = async (readable, what, ms) => {
    const reader = readable.getReader();
    const chunks = [];
    let n = 0;
    for (;;) {
      const { value, done } = await bounded(reader.read(), what, ms);
      if (done) break;
      chunks.push(value);
      n += value.byteLength;
    }
    const out = new Uint8Array(n);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  };
  const sha = async (buf) => hex(await crypto.subtle.digest('SHA-256', buf));
  // A WebTransport that is ready, or an error naming why not.
  const open = async (url, ms) => {
    const wt = new WebTransport(url);
    // `closed` rejects too when `ready` does: never leave it unhandled.
    wt.closed.catch(() => {});
    try {
      await bounded(wt.ready, `ready ${url}`, ms);
    } catch (e) {
      const closed = await bounded(wt.closed, 'closed', 1000).then(
        (c) => `closed ${JSON.stringify(c)}`,
        (c) => `closed: ${c?.name ?? ''} ${c?.message ?? c} source=${c?.source ?? ''} streamErrorCode=${c?.streamErrorCode ?? ''}`,
      );
      try {
        wt.close();
      } catch {}
      throw new Error(`${e?.name ?? ''} ${e?.message ?? e} (${closed})`);
    }
    return wt;
  };
  // One bidi stream: `data` written with FIN while the echo is read.
  const bidiEcho = async (wt, data, ms) => {
    const t0 = performance.now();
    const stream = await bounded(wt.createBidirectionalStream(), 'createBidirectionalStream', ms);
    const writer = stream.writable.getWriter();
    const writing = (async () => {
      for (let i = 0; i < data.length; i += 16384) await writer.write(data.subarray(i, i + 16384));
      await writer.close();
    })();
    const [back] = await Promise.all([readAll(stream.readable, 'bidi echo', ms), bounded(writing, 'bidi write', ms)]);
    const [sent, got] = await Promise.all([sha(data), sha(back)]);
    return { sent: data.length, received: back.length, sha_sent: sent, sha_received: got, ms: Math.round(performance.now() - t0) };
  };
  window.__wt = { hex, bounded, random, readAll, sha, open, bidiEcho, sessions: {} };
}

function details(e) {
  return { error: String(e?.message ?? e) };
}

// Chromium's own view of each WebTransport session, from its net log (the
// WEB_TRANSPORT_CLIENT sources): URL, the negotiated WebTransport and HTTP
// datagram versions (QUIC_SESSION_WEBTRANSPORT_SESSION_READY), the states
// it went through and any error or QUIC close details.
function sessionsFromNetLog(file) {
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
  const sources = Object.fromEntries(Object.entries(log.constants.logSourceType).map(([k, v]) => [v, k]));
  const byId = new Map();
  for (const ev of log.events ?? []) {
    if (sources[ev.source?.type] !== 'WEB_TRANSPORT_CLIENT') continue;
    const type = names[ev.type] ?? '';
    const p = ev.params ?? {};
    let s = byId.get(ev.source.id);
    if (!s) byId.set(ev.source.id, (s = { states: [] }));
    if (type === 'QUIC_SESSION_WEBTRANSPORT_CLIENT_ALIVE' && p.url) s.url = p.url;
    else if (type === 'QUIC_SESSION_WEBTRANSPORT_SESSION_READY') {
      s.webtransport_http3_version = p.webtransport_http3_version;
      s.http_datagram_version = p.http_datagram_version;
    } else if (type === 'QUIC_SESSION_WEBTRANSPORT_CLIENT_STATE_CHANGED') {
      s.states.push(p.next_state);
      if (p.error) s.error = p.error;
    } else if (type === 'QUIC_SESSION_CLOSED') {
      s.quic_closed = { details: p.details, from_peer: p.from_peer, quic_error: p.quic_error };
    }
  }
  return { sessions: [...byId.values()] };
}

let browser;
let stage = 'launch';
try {
  browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    timeout: timeoutMs,
    args: [
      '--no-sandbox',
      `--ignore-certificate-errors-spki-list=${spkiHash}`,
      '--enable-quic',
      // Chromium accepts a QUIC certificate outside its known roots (even
      // one on the SPKI list) only for hosts named here
      // (ProofVerifierChromium's hostnames_to_allow_unknown_roots, which
      // the dedicated WebTransport client builds from this list too);
      // without it the handshake fails with CERTIFICATE_VERIFY_FAILED.
      `--origin-to-force-quic-on=${edge.hostname}:${edge.port}`,
      // Nothing but our own traffic: no component updates, no field trials.
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      // The edge's name goes to --connect ("localhost" would also give ::1,
      // where the edge does not listen); every other name fails without a
      // DNS query. The page is on 127.0.0.1: an IP literal, but `MAP *`
      // would catch it too, hence the EXCLUDE.
      `--host-resolver-rules=MAP ${edge.hostname} ${args.connect}, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1`,
      `--log-net-log=${netlog}`,
      '--net-log-capture-mode=Default',
    ],
  });
  stage = 'page';
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(timeoutMs);
  const answer = await page.goto(pageUrl, { waitUntil: 'load', timeout: timeoutMs });
  const env = await page.evaluate(() => ({ secure: isSecureContext, webtransport: typeof WebTransport }));
  report('page', answer?.status() === 200 && env.secure && env.webtransport === 'function', true, {
    url: pageUrl,
    status: answer?.status(),
    secure_context: env.secure,
    webtransport: env.webtransport,
    browser: browser.version(),
    spki_sha256: spkiHash,
  });
  await page.evaluate(installHelpers);

  // ---- Session 1, /echo: ready, bidi, uni, datagrams.
  const echoUrl = new URL(args['echo-path'], edge).href;
  stage = 'ready';
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ url, ms }) => {
          const t0 = performance.now();
          const wt = await window.__wt.open(url, ms);
          window.__wt.sessions.echo = wt;
          return { ms: Math.round(performance.now() - t0) };
        },
        { url: echoUrl, ms: timeoutMs },
      ),
      'ready',
      timeoutMs + 5000,
    );
    report('ready', true, true, { url: echoUrl, ...r });
  } catch (e) {
    report('ready', false, true, { url: echoUrl, ...details(e) });
    throw new Error('no session: the other checks need one');
  }

  stage = 'bidi_echo';
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ n, ms }) => {
          const w = window.__wt;
          return w.bidiEcho(w.sessions.echo, w.random(n), ms);
        },
        { n: Number(args['bidi-bytes']), ms: timeoutMs },
      ),
      'bidi_echo',
      timeoutMs + 5000,
    );
    report('bidi_echo', r.received === r.sent && r.sha_received === r.sha_sent, true, r);
  } catch (e) {
    report('bidi_echo', false, true, details(e));
  }

  stage = 'uni_echo';
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ n, ms }) => {
          const w = window.__wt;
          const wt = w.sessions.echo;
          const t0 = performance.now();
          const data = w.random(n);
          const incoming = wt.incomingUnidirectionalStreams.getReader();
          const out = await w.bounded(wt.createUnidirectionalStream(), 'createUnidirectionalStream', ms);
          const writer = out.getWriter();
          for (let i = 0; i < data.length; i += 16384) await w.bounded(writer.write(data.subarray(i, i + 16384)), 'uni write', ms);
          await w.bounded(writer.close(), 'uni close', ms);
          const { value: echo, done } = await w.bounded(incoming.read(), 'incoming uni stream', ms);
          incoming.releaseLock();
          if (done) throw new Error('incomingUnidirectionalStreams ended');
          const back = await w.readAll(echo, 'uni echo', ms);
          const [sent, got] = await Promise.all([w.sha(data), w.sha(back)]);
          return { sent: data.length, received: back.length, sha_sent: sent, sha_received: got, ms: Math.round(performance.now() - t0) };
        },
        { n: Number(args['uni-bytes']), ms: timeoutMs },
      ),
      'uni_echo',
      timeoutMs + 5000,
    );
    report('uni_echo', r.received === r.sent && r.sha_received === r.sha_sent, true, r);
  } catch (e) {
    report('uni_echo', false, true, details(e));
  }

  stage = 'datagram_echo';
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ n, ms }) => {
          const w = window.__wt;
          const wt = w.sessions.echo;
          const nonce = Math.random().toString(36).slice(2);
          const sent = new Set();
          const enc = new TextEncoder();
          const dec = new TextDecoder();
          const reader = wt.datagrams.readable.getReader();
          const writer = wt.datagrams.writable.getWriter();
          const got = new Set();
          const other = [];
          // Echoes for up to 3 s after the last send (bounded by ms too).
          const reading = (async () => {
            for (;;) {
              const { value, done } = await reader.read();
              if (done) return;
              const s = dec.decode(value);
              if (sent.has(s)) got.add(s);
              else other.push(s.slice(0, 64));
              if (got.size === n) return;
            }
          })();
          reading.catch(() => {});
          for (let i = 0; i < n; i++) {
            const s = `dgram ${i} ${nonce}`;
            sent.add(s);
            await w.bounded(writer.write(enc.encode(s)), 'datagram write', ms);
            // A little spacing: an unpaced burst may overflow a queue.
            await new Promise((r) => setTimeout(r, 10));
          }
          await w.bounded(reading, 'datagram echoes', Math.min(ms, 3000)).catch(() => {});
          reader.releaseLock();
          writer.releaseLock();
          return { sent: n, received: got.size, other, max_datagram_size: wt.datagrams.maxDatagramSize };
        },
        { n: Number(args.datagrams), ms: timeoutMs },
      ),
      'datagram_echo',
      timeoutMs + 5000,
    );
    report('datagram_echo', r.received >= 1 && r.other.length === 0, true, r);
  } catch (e) {
    report('datagram_echo', false, true, details(e));
  }

  // ---- Session 2, /close?code=C&reason=R: the upstream closes after one echo.
  stage = 'server_close';
  const closeUrl = new URL(
    `/close?code=${serverClose.code}&reason=${encodeURIComponent(serverClose.reason)}`,
    edge,
  ).href;
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ url, ms }) => {
          const w = window.__wt;
          const wt = await w.open(url, ms);
          const echo = await w.bidiEcho(wt, w.random(1000), ms);
          const t0 = performance.now();
          const info = await w.bounded(wt.closed, 'closed', ms);
          return { echo, closed: { closeCode: info?.closeCode, reason: info?.reason }, close_ms: Math.round(performance.now() - t0) };
        },
        { url: closeUrl, ms: timeoutMs },
      ),
      'server_close',
      2 * timeoutMs + 5000,
    );
    const ok =
      r.echo.received === r.echo.sent &&
      r.echo.sha_received === r.echo.sha_sent &&
      r.closed.closeCode === serverClose.code &&
      r.closed.reason === serverClose.reason;
    report('server_close', ok, true, { url: closeUrl, want: { closeCode: serverClose.code, reason: serverClose.reason }, ...r });
  } catch (e) {
    report('server_close', false, true, { url: closeUrl, ...details(e) });
  }

  // ---- Session 3, /echo: the page closes with a code and reason.
  stage = 'client_close';
  try {
    const r = await withTimeout(
      page.evaluate(
        async ({ url, code, reason, ms }) => {
          const w = window.__wt;
          const wt = await w.open(url, ms);
          // One echo first: the session is in use through the edge.
          const echo = await w.bidiEcho(wt, w.random(1000), ms);
          wt.close({ closeCode: code, reason });
          const info = await w.bounded(wt.closed, 'closed', ms);
          return { echo, closed: { closeCode: info?.closeCode, reason: info?.reason } };
        },
        { url: echoUrl, code: clientClose.code, reason: clientClose.reason, ms: timeoutMs },
      ),
      'client_close',
      2 * timeoutMs + 5000,
    );
    const ok = r.echo.received === r.echo.sent && r.echo.sha_received === r.echo.sha_sent;
    report('client_close', ok, true, {
      url: echoUrl,
      sent: { closeCode: clientClose.code, reason: clientClose.reason, reason_hex: Buffer.from(clientClose.reason).toString('hex') },
      ...r,
    });
  } catch (e) {
    report('client_close', false, true, { url: echoUrl, ...details(e) });
  }

  // Session 1 ends here (a clean close, no code).
  await page.evaluate(() => window.__wt.sessions.echo?.close()).catch(() => {});
  await context.close();
} catch (e) {
  if (stage === 'ready') {
    // Reported above.
  } else {
    report(stage, false, true, details(e));
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  pageServer.close();
}

// The net log is complete once the browser has exited.
const net = sessionsFromNetLog(netlog);
report('netlog', !net.error, false, { file: netlog, ...net });

if (!args['netlog-dir'] && !failed) fs.rmSync(netlogDir, { recursive: true, force: true });
else if (failed) console.error(`Chromium net log: ${netlog}`);
process.exit(failed ? 1 : 0);
