// A tiny HTTP client that plays the browser (for the demo): a cookie jar, redirects followed the
// way browsers do (303/302/301 become GET, 307/308 keep method and body), and forms submitted
// the way an auto-submitting page or a click would.
import { parseForm } from './util.mjs';

export class Agent {
  constructor({ onHop = () => {} } = {}) {
    this.jar = new Map(); // `${host}|${path}|${name}` -> { host, path, name, value }
    this.onHop = onHop;
  }

  cookieHeader(url) {
    const u = new URL(url);
    const pairs = [];
    for (const c of this.jar.values()) {
      if (c.host !== u.hostname) continue; // host-only cookies; ports are not part of cookie scope
      if (!(u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))) continue;
      pairs.push(`${c.name}=${c.value}`);
    }
    return pairs.join('; ');
  }

  store(url, res) {
    const u = new URL(url);
    for (const line of res.headers.getSetCookie()) {
      const [nameValue, ...attrs] = line.split(';');
      const eq = nameValue.indexOf('=');
      const name = nameValue.slice(0, eq).trim();
      const value = nameValue.slice(eq + 1).trim();
      let cpath = u.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'path') cpath = v.trim() || '/';
        if (key === 'expires' && Date.parse(v) < Date.now()) expired = true;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
      }
      const id = `${u.hostname}|${cpath}|${name}`;
      if (expired) this.jar.delete(id);
      else this.jar.set(id, { host: u.hostname, path: cpath, name, value });
    }
  }

  /** One request, no redirect following. */
  async request(method, url, body) {
    const headers = { 'user-agent': 'eam-proxy-demo/1 (plays the browser)', accept: 'text/html,application/json' };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(15000) });
    this.store(url, res);
    const text = await res.text();
    const hop = { method, url, status: res.status, location: res.headers.get('location'), body, text, headers: res.headers };
    this.onHop(hop);
    return hop;
  }

  /** A navigation: follows redirects like a browser. Returns the final response. */
  async navigate(method, url, body) {
    let hop = await this.request(method, url, body);
    for (let i = 0; i < 10 && hop.status >= 300 && hop.status < 400 && hop.location; i += 1) {
      const next = new URL(hop.location, hop.url).href;
      if (hop.status === 307 || hop.status === 308) hop = await this.request(method, next, body);
      else hop = await this.request('GET', next);
    }
    return hop;
  }

  /** Submits the first form of a page (what the page's script or the user's click would do). */
  async submit(hop) {
    const form = parseForm(hop.text, hop.url);
    if (!form) throw new Error(`no form on ${hop.url} (status ${hop.status})`);
    const body = new URLSearchParams(form.fields).toString();
    return form.method === 'POST' ? this.navigate('POST', form.action, body)
      : this.navigate('GET', `${form.action.split('?')[0]}?${body}`);
  }
}
