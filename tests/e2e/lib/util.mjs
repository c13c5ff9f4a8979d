// Small helpers shared by the simulator, the provider, the stack and the demo client.
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const guid = () => randomUUID();
export const opaque = (bytes = 24) => randomBytes(bytes).toString('base64url');

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'", '#x27': "'", '#x2F': '/', '#47': '/' };
export function unescapeHtml(value) {
  return String(value).replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e) => {
    if (ENTITIES[e] !== undefined) return ENTITIES[e];
    if (/^#x/i.test(e)) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (/^#/.test(e)) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return m;
  });
}

/** A free TCP port on 127.0.0.1 (bound then released: good enough for tests on loopback). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Listens on host:port (0 = any) and resolves to the bound port. */
export function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

/** Closes a server, cutting idle keep-alive connections so it does not linger. */
export function closeServer(server) {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections?.();
    setTimeout(() => server.closeAllConnections?.(), 200).unref();
  });
}

export async function readBody(req, limit = 256 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Ordered [name, value] pairs of an application/x-www-form-urlencoded string. */
export const formPairs = (body) => [...new URLSearchParams(body).entries()];

/**
 * The first <form> of an HTML page: its action (resolved against baseUrl), method and the
 * name/value of its <input> and <button name=…> fields. Enough for the pages of this stack
 * (Entra's auto-POST, the proxy's error form, oidc-provider's form_post, the login pages).
 */
export function parseForm(html, baseUrl) {
  const form = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!form) return undefined;
  const attr = (tag, name) => {
    const m = new RegExp(`\\b${name}\\s*=\\s*("([^"]*)"|'([^']*)'|([^\\s>]+))`, 'i').exec(tag);
    return m ? unescapeHtml(m[2] ?? m[3] ?? m[4]) : undefined;
  };
  const fields = [];
  for (const m of form[2].matchAll(/<(input|button)\b([^>]*)>/gi)) {
    const name = attr(m[2], 'name');
    const type = (attr(m[2], 'type') || (m[1].toLowerCase() === 'button' ? 'submit' : 'text')).toLowerCase();
    if (!name || type === 'submit') continue;
    fields.push([name, attr(m[2], 'value') ?? '']);
  }
  const action = attr(form[1], 'action');
  return {
    action: new URL(action ?? '', baseUrl).href,
    method: (attr(form[1], 'method') || 'GET').toUpperCase(),
    fields,
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls fn() until it returns a truthy value or timeoutMs passes. */
export async function waitFor(fn, timeoutMs, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

/**
 * Waits until `url` answers 200. `exited()` returns why the child process is gone (or nothing),
 * which fails the wait at once; a child that never serves is killed.
 */
export async function waitUntilServing(child, url, { exited, timeoutMs, what }) {
  try {
    await waitFor(async () => {
      const gone = exited();
      if (gone) throw new Error(gone);
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
        await res.text();
        return res.status === 200;
      } catch { return false; }
    }, timeoutMs, what);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

/** SIGTERM, SIGKILL after 5 s; resolves with how the child exited (`exitPromise`'s value). */
export async function stopChild(child, exitPromise) {
  if (child.exitCode !== null || child.signalCode !== null) return exitPromise;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  const result = await exitPromise;
  clearTimeout(timer);
  return result;
}

export const page = (title, body, { head = '' } = {}) => `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 0; background: #f3f4f6; color: #111827; }
  header { padding: 14px 28px; color: #fff; }
  main { max-width: 920px; margin: 24px auto; background: #fff; padding: 24px 28px; border-radius: 8px;
         box-shadow: 0 1px 3px rgba(0,0,0,.12); }
  h1 { font-size: 22px; margin: 0 0 12px; }
  table { border-collapse: collapse; width: 100%; margin: 10px 0; }
  td, th { border-bottom: 1px solid #e5e7eb; padding: 4px 8px; text-align: left; vertical-align: top;
           font-family: ui-monospace, monospace; font-size: 12.5px; word-break: break-all; }
  th { width: 30%; color: #374151; }
  .btn { display: inline-block; background: #2563eb; color: #fff; border: 0; padding: 9px 18px;
         border-radius: 6px; font-size: 15px; cursor: pointer; text-decoration: none; margin: 4px 6px 4px 0; }
  .btn.alt { background: #6b7280; }
  .ok { color: #047857; } .bad { color: #b91c1c; }
  .verdict { font-size: 26px; font-weight: 700; margin: 8px 0 14px; }
  input[type=text] { font-size: 15px; padding: 6px 8px; width: 260px; }
</style>
${head}
</head>
<body>${body}</body>
</html>`;

export const table = (rows) => `<table>${rows
  .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
  .join('')}</table>`;

export const short = (value, max = 80) => {
  const s = String(value);
  return s.length > max ? `${s.slice(0, max - 30)}…${s.slice(-24)} (${s.length} chars)` : s;
};

/**
 * Runs a server module on its own when node was started with it (`node provider.mjs --port …`):
 * parses --host, --port and `options`, awaits start(values, { host, port, log }) (log prefixes
 * NAME on stderr), prints describe(server) as one JSON line and closes the server on SIGINT or
 * SIGTERM. Does nothing when the module is imported.
 */
export async function standalone(moduleUrl, name, options, start, describe) {
  if (moduleUrl !== pathToFileURL(process.argv[1] ?? '').href) return;
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      ...options,
    },
  });
  const server = await start(values, {
    host: values.host,
    port: Number(values.port),
    log: (line) => console.error(`${name}: ${line}`),
  });
  console.log(JSON.stringify(describe(server)));
  const stop = () => server.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
