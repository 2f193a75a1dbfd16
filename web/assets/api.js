// The API client: the bearer token (kept for the browser tab only, in
// sessionStorage), JSON requests with errors as exceptions, and live tail
// read with fetch() rather than EventSource, so the token travels in the
// Authorization header and never in a URL (URLs end up in logs).

const TOKEN_KEY = 'ward.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.position = body && typeof body.position === 'number' ? body.position : null;
    this.kind = body && body.kind;
  }
}

function headers(extra) {
  const out = { Accept: 'application/json', ...extra };
  const t = token();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

export function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? `?${s}` : '';
}

async function send(method, path, params, body, signal) {
  const init = { method, headers: headers(body ? { 'Content-Type': 'application/json' } : {}), signal };
  if (body) init.body = JSON.stringify(body);
  const resp = await fetch(path + query(params), init);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    if (resp.status === 401) window.dispatchEvent(new CustomEvent('ward:unauthorized'));
    throw new ApiError(resp.status, data);
  }
  return data;
}

export const api = {
  get: (path, params, signal) => send('GET', path, params, null, signal),
  post: (path, body, signal) => send('POST', path, null, body, signal),
};

/**
 * Streams `/api/v1/tail?q=` (with Ward's own audit trail when
 * includeWard): calls onHit(event) per record until the
 * signal aborts or the server closes; onOpen() once the stream is
 * established, onLag(n) for skipped commits.
 */
export async function tail(q, { onHit, onLag, onOpen, signal, includeWard }) {
  const resp = await fetch('/api/v1/tail' + query({ q, include_ward: includeWard ? 'true' : '' }), {
    headers: headers({ Accept: 'text/event-stream' }),
    signal,
  });
  if (!resp.ok) {
    let data = null;
    try {
      data = await resp.json();
    } catch {
      data = null;
    }
    throw new ApiError(resp.status, data);
  }
  if (onOpen) onOpen();
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    // Server-Sent Events: blocks separated by a blank line.
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (!data.length) continue;
      try {
        const parsed = JSON.parse(data.join('\n'));
        if (event === 'hit') onHit(parsed);
        else if (event === 'lagged' && onLag) onLag(parsed.skipped);
      } catch {
        // A malformed block is skipped; the stream goes on.
      }
    }
  }
}
