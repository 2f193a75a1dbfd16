// Small DOM and formatting helpers shared by the pages. Elements are built
// with properties, never from HTML strings, so event text cannot inject
// markup; and styles go through the CSSOM, which the page's
// Content-Security-Policy allows (inline style attributes it does not).

/** h('div.a.b', {onclick, title, dataset: {}}, child, 'text', [more]) */
export function h(spec, props, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (props) setProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k.startsWith('aria-') || k === 'role' || k === 'for') el.setAttribute(k, v === true ? 'true' : v);
    else el[k] = v;
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** A link to a page of the dashboard (handled by the client-side router). */
export function link(text, path, params, cls) {
  return h('a' + (cls ? '.' + cls : ''), { href: href(path, params) }, text);
}

export function href(path, params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, v);
  }
  const s = qs.toString();
  return s ? `${path}?${s}` : path;
}

/** 2018-10-25T13:58:49.730Z -> 2018-10-25 13:58:49.730 (UTC throughout). */
export function fmtTime(t) {
  if (!t) return '';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace('T', ' ').replace('Z', '');
}

/** A time in RFC 3339 to the second (what the URL carries). */
export function iso(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function fmtCount(n) {
  return Number(n || 0).toLocaleString('en-US');
}

/** Reads a dotted path (`user.username`) from an event. */
export function get(obj, path) {
  let cur = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

/** A value as a term of the query language: bare when safe, else quoted. */
export function term(value) {
  const v = String(value);
  if (/^[A-Za-z0-9_.\-]+$/.test(v)) return v;
  return '"' + v.replace(/["\\]/g, (c) => '\\' + c) + '"';
}

/** The summary columns of an event: who (user or pod) and what (verb or message). */
export function summary(e) {
  const pod = e.kubernetes ? [e.kubernetes.namespace, e.kubernetes.pod].filter(Boolean).join('/') : '';
  let who = get(e, 'user.username') || pod || get(e, 'api.caller') || '';
  const imp = get(e, 'impersonatedUser.username');
  if (imp) who += ` → ${imp}`;
  let what;
  if (e.verb) {
    const ref = e.objectRef || {};
    const obj = [ref.resource, ref.subresource].filter(Boolean).join('/');
    const name = [ref.namespace, ref.name].filter(Boolean).join('/');
    const code = get(e, 'responseStatus.code');
    what = [e.verb, obj, name, code ? `(${code})` : ''].filter(Boolean).join(' ');
  } else {
    what = e.message || e.requestURI || '';
  }
  return { who, what };
}

/** The entities of an event one can open a timeline of: [kind, value]. */
export function entities(e) {
  const out = [];
  const user = get(e, 'user.username');
  if (user) out.push(['user', user]);
  const imp = get(e, 'impersonatedUser.username');
  if (imp) out.push(['user', imp]);
  for (const ip of e.sourceIPs || []) out.push(['ip', ip]);
  if (e.kubernetes && e.kubernetes.namespace && e.kubernetes.pod) {
    out.push(['pod', `${e.kubernetes.namespace}/${e.kubernetes.pod}`]);
  }
  const ref = e.objectRef || {};
  if (ref.resource === 'pods' && ref.namespace && ref.name) out.push(['pod', `${ref.namespace}/${ref.name}`]);
  const seen = new Set();
  return out.filter(([k, v]) => {
    const key = `${k}:${v}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** Pretty JSON with keys, strings and numbers marked for colouring. */
export function jsonView(value) {
  const pre = h('pre.json');
  const text = JSON.stringify(value, null, 2);
  // Tokenize the serialized text: keys, strings, literals; the rest as is.
  const re = /("(?:[^"\\]|\\.)*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) pre.append(text.slice(last, m.index));
    if (m[1] && m[2]) pre.append(h('span.j-key', null, m[1]), m[2]);
    else if (m[1]) pre.append(h('span.j-str', null, m[1]));
    else if (m[3]) pre.append(h('span.j-lit', null, m[3]));
    else pre.append(h('span.j-num', null, m[4]));
    last = m.index + m[0].length;
  }
  pre.append(text.slice(last));
  return pre;
}

export function levelBadge(level) {
  return h(`span.badge.level-${level}`, null, level);
}

/** A message area: `msg(el, 'error', text)`; empty text clears it. */
export function msg(el, kind, text) {
  el.replaceChildren();
  el.className = `msg ${kind || ''}`;
  if (text) el.append(text);
}
