// eventsource-cookie.mjs — a real browser subscribes to a Mercure hub with the authorization cookie.
//
// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) loads a page from a static
// server this script starts on 127.0.0.1 (another port than the hub's, so another origin), sets the cookie
// `mercureAuthorization=<token>` for the hub's host with `context.addCookies({url: HUB_URL})`, and opens
// `new EventSource(HUB_URL + '/.well-known/mercure?topic=' + TOPIC, {withCredentials: true})`. Cookies are
// per host, not per port, so the cookie set for 127.0.0.1 is sent; the hub must answer the cross-origin
// request with `Access-Control-Allow-Origin: <page origin>` and `Access-Control-Allow-Credentials: true`
// (start it with `--cors-origins <page origin>`), or the EventSource fails.
//
// Why the page origin is announced before the hub is named: the hub's CORS list must contain the page
// origin, which exists only once the static server has bound a port. Reserving a port in advance and
// hoping it stays free is racy, so the default protocol is:
//   1. the script binds 127.0.0.1:0 (or PAGE_PORT when set) and prints  `PAGE_ORIGIN http://127.0.0.1:P`,
//      then starts Chromium while it waits;
//   2. the caller starts the hub with `--cors-origins http://127.0.0.1:P` and writes ONE line of JSON to
//      the script's stdin:
//      {"hubUrl": "http://127.0.0.1:H", "token": "...", "topic": "...",
//       "cookieName": "mercureAuthorization", "matcher": "topic", "messages": 1, "eventTypes": ["message"]}
//      (only hubUrl, token and topic are required; `matcher` is the query parameter carrying the topic,
//      `topic` by default, `match` for the current protocol; a `__Secure-` cookie is set as Secure);
//   3. the script prints `READY` once the EventSource is open — publish then;
//   4. for each message it prints `RECEIVED <data>` (CR, LF and backslash escaped as \r, \n, \\ so it
//      stays one line) and `MESSAGE {"data":..,"lastEventId":..,"type":..}` (exact, for programs), and
//      exits 0 after `messages` of them.
// When the environment has HUB_URL, step 2 reads HUB_URL, TOKEN, TOPIC (and optionally COOKIE_NAME,
// MESSAGES) from the environment instead of stdin — handy by hand, with PAGE_PORT fixing the page origin.
//
// On any failure or timeout it prints `ERROR <reason>` and exits 1. Bounds: TIMEOUT_MS (default 20000) for
// each wait (open, messages), LAUNCH_TIMEOUT_MS (30000) for Chromium, CONFIG_TIMEOUT_MS (60000) for the
// stdin line; a watchdog ends the process if everything together takes longer. Chromium gets a fresh
// user-data-dir, removed at exit. Browser console messages go to stderr.
//
// `node eventsource-cookie.mjs --selftest` needs no hub: it also starts a fake hub (a second static server,
// another origin) that checks the cookie and the Origin, answers with CORS headers and one SSE message,
// and runs the same steps against it — proof that Chromium, cookies and CORS work on this machine.
//
// crates/testkit's `browser` module runs this script; see its docs for the Rust side.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TIMEOUT_MS = Number(process.env.TIMEOUT_MS || 20000);
const LAUNCH_TIMEOUT_MS = Number(process.env.LAUNCH_TIMEOUT_MS || 30000);
const CONFIG_TIMEOUT_MS = Number(process.env.CONFIG_TIMEOUT_MS || 60000);
// Without the background-networking flags Chromium keeps trying to reach Google's hosts on a closed network.
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-breakpad',
  '--disable-crash-reporter',
];
const PAGE_HTML =
  '<!doctype html><html><head><meta charset="utf-8"><title>quicksilver browser test</title></head>' +
  '<body><p>quicksilver EventSource test page</p></body></html>';

let userDataDir = null;
let launching = null;
let context = null;
const servers = [];

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function say(line) {
  process.stdout.write(line + '\n');
}

function oneLine(text) {
  return String(text).replace(/\\/g, '\\\\').replace(/\r/g, '\\r').replace(/\n/g, '\\n');
}

// Idempotent: a SIGTERM arriving while the normal exit is cleaning up waits for the same clean-up, so the
// profile directory is removed only after Chromium has closed (and cannot be recreated by it).
let cleaning = null;
function cleanup() {
  cleaning ??= closeEverything();
  return cleaning;
}

async function closeEverything() {
  // The browser may still be launching (an early failure): wait for it, boundedly, so it gets closed.
  if (!context && launching) await Promise.race([launching.catch(() => {}), sleep(LAUNCH_TIMEOUT_MS)]);
  if (context) {
    await Promise.race([context.close().catch(() => {}), sleep(5000)]);
    context = null;
  }
  for (const server of servers.splice(0)) {
    server.closeAllConnections?.();
    server.close();
  }
  if (userDataDir) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    userDataDir = null;
  }
}

async function fail(reason) {
  say('ERROR ' + oneLine(reason));
  await cleanup();
  process.exit(1);
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
  });
}

async function startPageServer(port) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(PAGE_HTML);
  });
  servers.push(server);
  return listen(server, port);
}

// The selftest's stand-in for a hub: the checks a real hub's CORS and cookie handling must pass.
async function startFakeHub(pageOrigin, cookieName, token) {
  const server = http.createServer((req, res) => {
    const cookies = (req.headers.cookie || '').split(';').map((c) => c.trim());
    const authorized = cookies.includes(`${cookieName}=${token}`);
    const cors = { 'access-control-allow-origin': pageOrigin, 'access-control-allow-credentials': 'true' };
    if (req.headers.origin !== pageOrigin || !authorized) {
      process.stderr.write(`fake hub: refused origin=${req.headers.origin} cookie=${req.headers.cookie}\n`);
      res.writeHead(401, { ...cors, 'content-type': 'text/plain' });
      res.end('unauthorized');
      return;
    }
    res.writeHead(200, { ...cors, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(':\n\n');
    const timer = setTimeout(() => res.write('id: selftest-1\ndata: selftest\ndata: line 2\n\n'), 300);
    req.on('close', () => clearTimeout(timer));
  });
  servers.push(server);
  return listen(server, 0);
}

function readConfigFromStdin() {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    const timer = setTimeout(() => reject(new Error(`no config line on stdin within ${CONFIG_TIMEOUT_MS} ms`)), CONFIG_TIMEOUT_MS);
    rl.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line));
      } catch (e) {
        reject(new Error(`config line is not JSON: ${e.message}`));
      }
      rl.close(); // Emits 'close' synchronously: after settling, so its reject is a no-op.
    });
    rl.once('close', () => {
      clearTimeout(timer);
      reject(new Error('stdin closed before a config line'));
    });
  });
}

function configFromEnv() {
  return {
    hubUrl: process.env.HUB_URL,
    token: process.env.TOKEN,
    topic: process.env.TOPIC,
    cookieName: process.env.COOKIE_NAME,
    messages: process.env.MESSAGES ? Number(process.env.MESSAGES) : undefined,
  };
}

async function launchBrowser() {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'quicksilver-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    timeout: LAUNCH_TIMEOUT_MS,
    // Signals are handled below, so that they go through the same clean-up as every other exit.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  return context;
}

async function run(ctx, pageOrigin, config) {
  const hubUrl = String(config.hubUrl || '').replace(/\/+$/, '');
  if (!hubUrl || config.token === undefined || config.topic === undefined) {
    throw new Error('config needs hubUrl, token and topic');
  }
  const cookieName = config.cookieName || 'mercureAuthorization';
  const expected = config.messages || 1;
  const eventTypes = config.eventTypes || ['message'];
  // `topic` (pre-standardization) unless the caller names another matcher parameter (`match`, …).
  const param = config.matcher || 'topic';
  const url = `${hubUrl}/.well-known/mercure?${encodeURIComponent(param)}=${encodeURIComponent(config.topic)}`;

  // A `__Secure-` cookie must be set as Secure; Chromium counts 127.0.0.1 as a secure origin for it.
  const secure = cookieName.startsWith('__Secure-');
  const cookie = secure
    ? { name: cookieName, value: config.token, domain: new URL(hubUrl).hostname, path: '/', sameSite: 'Lax', secure }
    : { name: cookieName, value: config.token, url: hubUrl, sameSite: 'Lax' };
  await ctx.addCookies([cookie]);
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on('console', (msg) => process.stderr.write(`browser console: ${msg.text()}\n`));
  page.on('pageerror', (err) => process.stderr.write(`browser page error: ${err.message}\n`));
  await page.goto(pageOrigin + '/', { timeout: TIMEOUT_MS });

  await page.evaluate(
    ({ url, eventTypes }) => {
      const state = { opened: false, closed: false, errors: 0, messages: [] };
      window.__quicksilver = state;
      const source = new EventSource(url, { withCredentials: true });
      source.onopen = () => {
        state.opened = true;
      };
      source.onerror = () => {
        state.errors += 1;
        // CLOSED (not CONNECTING) means the browser gave up: an HTTP error status, a wrong content type,
        // or a CORS refusal; it will not reconnect.
        if (source.readyState === EventSource.CLOSED) state.closed = true;
      };
      for (const type of eventTypes) {
        source.addEventListener(type, (e) => state.messages.push({ data: e.data, lastEventId: e.lastEventId, type: e.type }));
      }
    },
    { url, eventTypes },
  );

  const opened = await page
    .waitForFunction(() => window.__quicksilver.opened || window.__quicksilver.closed, null, { timeout: TIMEOUT_MS, polling: 50 })
    .then(() => page.evaluate(() => window.__quicksilver.opened))
    .catch(() => false);
  if (!opened) {
    const closed = await page.evaluate(() => window.__quicksilver.closed).catch(() => false);
    throw new Error(
      closed
        ? `EventSource to ${url} closed before opening (HTTP error status, wrong content type, or CORS refused ${pageOrigin})`
        : `EventSource to ${url} did not open within ${TIMEOUT_MS} ms`,
    );
  }
  say('READY');

  let reported = 0;
  const deadline = Date.now() + TIMEOUT_MS;
  while (reported < expected) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`received ${reported} of ${expected} messages within ${TIMEOUT_MS} ms`);
    await page
      .waitForFunction((n) => window.__quicksilver.messages.length > n || window.__quicksilver.closed, reported, {
        timeout: left,
        polling: 50,
      })
      .catch(() => {});
    const state = await page.evaluate(() => ({ messages: window.__quicksilver.messages, closed: window.__quicksilver.closed }));
    for (const message of state.messages.slice(reported, expected)) {
      say(`RECEIVED ${oneLine(message.data)}`);
      say(`MESSAGE ${JSON.stringify(message)}`);
      reported += 1;
    }
    if (reported < expected && state.closed) throw new Error(`EventSource closed after ${reported} of ${expected} messages`);
  }
}

async function main() {
  const selftest = process.argv.includes('--selftest');
  const watchdogMs = LAUNCH_TIMEOUT_MS + CONFIG_TIMEOUT_MS + 3 * TIMEOUT_MS;
  setTimeout(() => fail(`watchdog: still running after ${watchdogMs} ms`), watchdogMs).unref();
  for (const signal of ['SIGTERM', 'SIGINT']) process.once(signal, () => fail(`got ${signal}`));

  const pageOrigin = await startPageServer(selftest ? 0 : Number(process.env.PAGE_PORT || 0));
  say(`PAGE_ORIGIN ${pageOrigin}`);
  // Chromium starts while the caller starts its hub.
  launching = launchBrowser();
  launching.catch(() => {}); // Reported below, once awaited.

  let config;
  if (selftest) {
    const token = 'selftest-token';
    config = { hubUrl: await startFakeHub(pageOrigin, 'mercureAuthorization', token), token, topic: 'https://example.com/selftest' };
  } else if (process.env.HUB_URL) {
    config = configFromEnv();
  } else {
    config = await readConfigFromStdin();
  }
  let ctx;
  try {
    ctx = await launching;
  } catch (e) {
    throw new Error(`launching ${CHROMIUM} failed: ${e.message}`);
  }
  await run(ctx, pageOrigin, config);
  await cleanup();
  process.exit(0);
}

main().catch((e) => fail(e && e.message ? e.message : String(e)));
