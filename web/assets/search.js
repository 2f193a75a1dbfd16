// Search: the query bar (history, field-name completion, errors at their
// position), the time range picker, the histogram (drag to zoom), the
// results table (rows expand to the event's JSON), the field sidebar (top
// values; click to filter for or out) and live tail. The URL carries the
// query and the range, so a search can be shared as a link.

import { api, tail, ApiError } from './api.js';
import { h, svg, href, fmtTime, fmtCount, iso, summary, entities, jsonView, term, msg } from './dom.js';

/** Events per page: the most one request loads into the browser. */
const PAGE = 50;
const QUICK = [
  ['15m', 'Last 15 minutes', 15 * 60e3],
  ['1h', 'Last 1 hour', 3600e3],
  ['24h', 'Last 24 hours', 86400e3],
  ['7d', 'Last 7 days', 7 * 86400e3],
  ['all', 'All time', null],
];
const DEFAULT_RANGE = '15m';
/** Fields with top values (the index's keyword columns). */
const FACETS = [
  'source', 'verb', 'user.username', 'objectRef.resource', 'objectRef.subresource',
  'objectRef.namespace', 'objectRef.name', 'sourceIPs', 'userAgent', 'cluster',
  'kubernetes.namespace', 'kubernetes.pod', 'kubernetes.container', 'stream', 'node',
];
const OPEN_FACETS = ['verb', 'user.username'];
/** Field names offered while typing. */
const FIELDS = [
  ...FACETS, 'auditID', 'stage', 'level', 'requestURI', 'responseStatus.code', 'responseStatus.reason',
  'impersonatedUser.username', 'user.groups', 'objectRef.apiGroup', 'annotations', 'message',
  'timestamp', 'ward.id', 'api.caller', 'api.endpoint', '_exists_',
].sort();
const HISTORY_KEY = 'ward.history';
const HISTORY_MAX = 20;

function recent() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
    return Array.isArray(list) ? list.filter((x) => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

function remember(q) {
  if (!q.trim()) return;
  const list = [q, ...recent().filter((x) => x !== q)].slice(0, HISTORY_MAX);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(list));
}

/** The range of the URL: relative (`range=1h`), absolute (`start`, `end`) or all time. */
function readRange(params) {
  const start = params.get('start');
  const end = params.get('end');
  if (start || end) return { kind: 'abs', start: start || '', end: end || '' };
  const rel = params.get('range') || DEFAULT_RANGE;
  const quick = QUICK.find((x) => x[0] === rel);
  if (!quick) return { kind: 'rel', rel: DEFAULT_RANGE };
  return rel === 'all' ? { kind: 'all' } : { kind: 'rel', rel };
}

/** The range as request bounds, relative ranges resolved now. */
function bounds(range) {
  if (range.kind === 'abs') return { start: range.start, end: range.end };
  if (range.kind === 'all') return { start: '', end: '' };
  const ms = QUICK.find((x) => x[0] === range.rel)[2];
  const now = Date.now();
  return { start: iso(now - ms), end: iso(now + 1000) };
}

function rangeLabel(range) {
  if (range.kind === 'abs') return `${fmtTime(range.start) || '…'} → ${fmtTime(range.end) || 'now'}`;
  if (range.kind === 'all') return 'All time';
  return QUICK.find((x) => x[0] === range.rel)[1];
}

function urlParams(q, range) {
  const p = { q };
  if (range.kind === 'abs') Object.assign(p, { start: range.start, end: range.end });
  else if (range.kind === 'all') p.range = 'all';
  else if (range.rel !== DEFAULT_RANGE) p.range = range.rel;
  return p;
}

/** A clock icon (system fonts may lack an emoji one). */
function clock() {
  return svg('svg', { width: 14, height: 14, viewBox: '0 0 16 16', 'aria-hidden': 'true', class: 'icon' },
    svg('circle', { cx: 8, cy: 8, r: 6.5, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5 }),
    svg('path', { d: 'M8 4.5V8l2.5 1.5', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5, 'stroke-linecap': 'round' }));
}

/** `1h`, `30s`, `7d` in milliseconds. */
function intervalMs(s) {
  const m = /^(\d+)(ms|s|m|h|d|w)$/.exec(s || '');
  if (!m) return 0;
  const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[m[2]];
  return Number(m[1]) * unit;
}

/** Adds `field:value` (or its negation) to a query. */
export function addFilter(q, field, value, negate) {
  const clause = `${negate ? 'NOT ' : ''}${field}:${term(value)}`;
  const cur = q.trim();
  if (!cur || cur === '*' || cur === '*:*') return clause;
  if (cur.includes(clause)) return cur;
  const wrapped = /\bOR\b|\|\|/.test(cur) ? `(${cur})` : cur;
  return `${wrapped} AND ${clause}`;
}

/** Byte offset (as the API reports it) to a string index. */
function charIndex(text, bytes) {
  const enc = new TextEncoder().encode(text);
  return new TextDecoder().decode(enc.slice(0, Math.max(0, bytes))).length;
}

export function render(main, params, ctx) {
  let q = params.get('q') || '';
  let range = readRange(params);
  let order = params.get('order') === 'oldest' ? 'oldest' : 'newest';
  // Ward's own API audit trail (source:ward) is left out unless asked for.
  let includeWard = params.get('ward') === '1';
  const openFacets = new Set(OPEN_FACETS);
  const cursors = [null]; // cursors[i]: the cursor of page i
  let pageIndex = 0;
  let generation = 0;
  let inflight = null;
  let tailing = null;
  let lastHistogram = null;

  // --- query bar -------------------------------------------------------
  const input = h('input', {
    id: 'query',
    type: 'search',
    value: q,
    autocomplete: 'off',
    spellcheck: false,
    placeholder: 'verb:create AND objectRef.subresource:exec   (press / to focus)',
    'aria-label': 'Query',
    role: 'combobox',
    'aria-autocomplete': 'list',
    'aria-expanded': 'false',
    'aria-controls': 'suggestions',
  });
  const suggestions = h('ul.suggestions', { id: 'suggestions', role: 'listbox', hidden: true });
  const error = h('div.query-error', { id: 'query-error', role: 'alert', hidden: true });
  const rangeBtn = h('button.range-btn', { type: 'button', 'aria-haspopup': 'dialog', 'aria-expanded': 'false' });
  const picker = h('div.picker.card', { hidden: true, role: 'dialog', 'aria-label': 'Time range' });
  const tailBtn = h('button.tail-btn', { type: 'button', 'aria-pressed': 'false', id: 'tail-toggle' }, 'Live tail');
  const wardBox = h('input', { type: 'checkbox', id: 'include-ward', checked: includeWard });
  wardBox.addEventListener('change', () => { includeWard = wardBox.checked; submit({ keepHistory: true }); });
  const wardToggle = h(
    'label.ward-toggle',
    { title: "Include Ward's own API audit trail (source:ward); a query naming source:ward always does" },
    wardBox,
    " Ward's API audit",
  );
  const form = h(
    'form.querybar',
    { role: 'search', onsubmit: (e) => { e.preventDefault(); submit(); } },
    h('div.query-wrap', null, input, suggestions),
    h('div.range-wrap', null, rangeBtn, picker),
    h('button.primary', { type: 'submit' }, 'Search'),
    wardToggle,
    ctx.me.may.tail ? tailBtn : null,
  );

  // --- histogram, sidebar, results -------------------------------------
  const total = h('span.total', { id: 'total' });
  const histo = h('div.histogram', { id: 'histogram', 'aria-label': 'Matches over time; drag to zoom' });
  const sidebar = h('aside.fields', { 'aria-label': 'Fields' });
  const status = h('div.msg');
  const tbody = h('tbody');
  const table = h(
    'table.results',
    { id: 'results' },
    h('colgroup', null, h('col.c-toggle'), h('col.c-time'), h('col.c-source'), h('col.c-who'), h('col.c-what')),
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        h('th', null, h('span.sr', null, 'Expand')),
        h('th', null, h('button.link.sort', { type: 'button', onclick: toggleOrder, title: 'Change the order' }, 'Time ', h('span.order'))),
        h('th', null, 'Source'),
        h('th', null, 'User / pod'),
        h('th', null, 'Verb / message'),
      ),
    ),
    tbody,
  );
  const prev = h('button', { type: 'button', onclick: () => page(-1) }, '← Newer');
  const next = h('button', { type: 'button', onclick: () => page(1) }, 'Older →');
  const pager = h('div.pager', null, prev, h('span.page-no.muted'), next);
  const live = h('div.live', { hidden: true }, h('span.dot'), ' Live: new matching events appear at the top (at most ', String(PAGE), ').');

  main.append(
    h(
      'section.search',
      null,
      form,
      error,
      h('div.histo-head', null, total, h('span.muted.hint', null, 'Drag across the chart to zoom in')),
      histo,
      h('div.split', null, sidebar, h('div.results-wrap', null, live, status, table, pager)),
    ),
  );

  function updateOrderLabel() {
    table.querySelector('.order').textContent = order === 'newest' ? '↓' : '↑';
  }

  function toggleOrder() {
    order = order === 'newest' ? 'oldest' : 'newest';
    submit({ keepHistory: true });
  }

  // --- time range picker -----------------------------------------------
  function renderPicker() {
    rangeBtn.replaceChildren(clock(), rangeLabel(range));
    const b = bounds(range);
    const startIn = h('input', { type: 'text', id: 'range-start', value: range.kind === 'abs' ? range.start : b.start, placeholder: '2024-01-31T08:00:00Z' });
    const endIn = h('input', { type: 'text', id: 'range-end', value: range.kind === 'abs' ? range.end : b.end, placeholder: 'now' });
    const note = h('p.msg');
    picker.replaceChildren(
      h('h3', null, 'Quick ranges'),
      h(
        'ul.quick',
        null,
        QUICK.map(([key, label]) =>
          h('li', null, h('button.link', { type: 'button', dataset: { range: key }, onclick: () => setRange(key === 'all' ? { kind: 'all' } : { kind: 'rel', rel: key }) }, label)),
        ),
      ),
      h('h3', null, 'Absolute range (UTC, RFC 3339)'),
      h(
        'form.abs',
        {
          onsubmit: (e) => {
            e.preventDefault();
            const s = startIn.value.trim();
            const en = endIn.value.trim();
            const bad = [s, en].find((v) => v && Number.isNaN(Date.parse(v)));
            if (bad) return msg(note, 'error', `Not a time: ${bad}`);
            if (s && en && Date.parse(s) >= Date.parse(en)) return msg(note, 'error', 'The start must be before the end.');
            setRange({ kind: 'abs', start: s ? iso(Date.parse(s)) : '', end: en ? iso(Date.parse(en)) : '' });
          },
        },
        h('label', { for: 'range-start' }, 'From'),
        startIn,
        h('label', { for: 'range-end' }, 'To'),
        endIn,
        h('button.primary', { type: 'submit' }, 'Apply'),
        note,
      ),
    );
  }

  function togglePicker(show) {
    const open = show ?? picker.hidden;
    if (open) renderPicker();
    picker.hidden = !open;
    rangeBtn.setAttribute('aria-expanded', String(open));
    if (open) {
      const first = picker.querySelector('button');
      if (first) first.focus();
    }
  }
  rangeBtn.addEventListener('click', () => togglePicker());

  function setRange(r) {
    range = r;
    togglePicker(false);
    submit({ keepHistory: true });
  }

  // --- completion and history ------------------------------------------
  let items = [];
  let active = -1;

  /** The word being typed at the caret, if it can be a field name. */
  function wordAtCaret() {
    const pos = input.selectionStart ?? input.value.length;
    const before = input.value.slice(0, pos);
    const m = /(^|[\s(!-])([A-Za-z_][\w.]*)$/.exec(before);
    return m ? { word: m[2], from: pos - m[2].length, to: pos } : null;
  }

  function showSuggestions(forceHistory) {
    const w = wordAtCaret();
    items = [];
    if (w && !forceHistory) {
      for (const f of FIELDS) {
        if (f.toLowerCase().startsWith(w.word.toLowerCase()) && f !== w.word) items.push({ kind: 'field', text: f, w });
      }
      items = items.slice(0, 8);
    }
    if (!items.length && (forceHistory || !input.value.trim())) {
      items = recent().slice(0, 10).map((text) => ({ kind: 'history', text }));
    }
    // A field is completed by Enter at once; a recent query only once chosen.
    active = items.length && items[0].kind === 'field' ? 0 : -1;
    drawSuggestions();
  }

  function drawSuggestions() {
    suggestions.replaceChildren(
      ...items.map((it, i) =>
        h(
          `li.${it.kind}`,
          {
            role: 'option',
            id: `sugg-${i}`,
            'aria-selected': String(i === active),
            onmousedown: (e) => { e.preventDefault(); accept(i); },
          },
          h('span.kind', null, it.kind === 'field' ? 'field' : 'recent'),
          it.text,
        ),
      ),
    );
    suggestions.hidden = !items.length;
    input.setAttribute('aria-expanded', String(!suggestions.hidden));
    if (active >= 0) input.setAttribute('aria-activedescendant', `sugg-${active}`);
    else input.removeAttribute('aria-activedescendant');
  }

  function hideSuggestions() {
    items = [];
    active = -1;
    drawSuggestions();
  }

  function accept(i) {
    const it = items[i];
    if (!it) return;
    if (it.kind === 'field') {
      const v = input.value;
      input.value = v.slice(0, it.w.from) + it.text + ':' + v.slice(it.w.to);
      const caret = it.w.from + it.text.length + 1;
      input.setSelectionRange(caret, caret);
      hideSuggestions();
    } else {
      input.value = it.text;
      hideSuggestions();
      submit();
    }
    input.focus();
  }

  input.addEventListener('input', () => showSuggestions(false));
  input.addEventListener('focus', () => { if (!input.value.trim()) showSuggestions(true); });
  input.addEventListener('blur', () => setTimeout(hideSuggestions, 100));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') {
      e.preventDefault();
      if (suggestions.hidden) showSuggestions(!wordAtCaret());
      else { active = (active + 1) % items.length; drawSuggestions(); }
    } else if (e.key === 'ArrowUp' && !suggestions.hidden) {
      e.preventDefault();
      active = (active - 1 + items.length) % items.length;
      drawSuggestions();
    } else if (!suggestions.hidden && active >= 0 && (e.key === 'Enter' || (e.key === 'Tab' && items[active].kind === 'field'))) {
      e.preventDefault();
      accept(active);
    } else if (e.key === 'Escape') {
      if (!suggestions.hidden) { e.preventDefault(); hideSuggestions(); }
    }
  });

  function onDocClick(e) {
    if (!picker.hidden && !picker.contains(e.target) && e.target !== rangeBtn && !rangeBtn.contains(e.target)) togglePicker(false);
  }
  function onDocKey(e) {
    if (e.key === 'Escape' && !picker.hidden) { togglePicker(false); rangeBtn.focus(); }
  }
  document.addEventListener('mousedown', onDocClick);
  document.addEventListener('keydown', onDocKey);

  // --- running a search ------------------------------------------------
  function submit(opts = {}) {
    q = input.value;
    hideSuggestions();
    if (!opts.keepHistory) remember(q);
    const p = urlParams(q, range);
    if (order === 'oldest') p.order = 'oldest';
    if (includeWard) p.ward = '1';
    const url = href('/search', p);
    if (url !== location.pathname + location.search) pushUrl(url);
    cursors.length = 1;
    pageIndex = 0;
    if (tailing) restartTail();
    run();
  }

  function pushUrl(url) {
    window.history.pushState(null, '', url);
  }

  function showError(err) {
    error.replaceChildren();
    if (!err) { error.hidden = true; input.removeAttribute('aria-invalid'); return; }
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    error.append(h('div', null, err.message));
    if (err.position !== null && err.position !== undefined) {
      const i = charIndex(q, err.position);
      const at = q.slice(i, i + 1) || ' ';
      error.append(
        h('code.error-at', null, q.slice(0, i), h('mark', { title: `position ${err.position}` }, at), q.slice(i + 1)),
      );
    }
  }

  async function run() {
    const gen = ++generation;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    const signal = inflight.signal;
    const b = bounds(range);
    renderPicker();
    updateOrderLabel();
    msg(status, 'muted', 'Searching…');
    const base = { q, start: b.start, end: b.end, include_ward: includeWard ? 'true' : '' };
    const searchReq = api.get('/api/v1/search', { ...base, limit: PAGE, order, cursor: cursors[pageIndex] }, signal);
    const histoReq = api.get('/api/v1/aggregate', { ...base, histogram: 'auto' }, signal);
    // It may fail before the search answers (a bad query fails both): mark
    // it handled now, so the browser does not report an unhandled rejection;
    // awaiting it below still sees the error.
    histoReq.catch(() => {});
    try {
      const res = await searchReq;
      if (gen !== generation) return;
      showError(null);
      total.textContent = `${fmtCount(res.total)} ${res.total === 1 ? 'match' : 'matches'}`;
      cursors[pageIndex + 1] = res.cursor;
      drawRows(res.hits);
      msg(status, '', res.hits.length ? '' : 'No events match this query in this time range.');
      prev.disabled = pageIndex === 0;
      next.disabled = !res.cursor;
      pager.querySelector('.page-no').textContent = `Page ${pageIndex + 1}`;
    } catch (err) {
      if (gen !== generation || err.name === 'AbortError') return;
      tbody.replaceChildren();
      total.textContent = '';
      if (err instanceof ApiError && err.kind === 'query') {
        showError(err);
        msg(status, '', '');
      } else {
        showError(null);
        msg(status, 'error', err.message);
      }
      histo.replaceChildren();
      sidebar.replaceChildren();
      return;
    }
    drawFacets(signal, gen, base);
    try {
      const agg = await histoReq;
      if (gen !== generation) return;
      lastHistogram = { agg, b };
      drawHistogram();
    } catch (err) {
      if (gen !== generation || err.name === 'AbortError') return;
      histo.replaceChildren(h('p.msg.error', null, err.message));
    }
  }

  function page(delta) {
    const target = pageIndex + delta;
    if (target < 0 || (delta > 0 && !cursors[target])) return;
    pageIndex = target;
    run();
  }

  // --- results ---------------------------------------------------------
  function row(e, fresh) {
    const { who, what } = summary(e);
    const detail = h('tr.detail', { hidden: true }, h('td', { colSpan: 5 }));
    const toggle = h('button.expand', { type: 'button', 'aria-expanded': 'false', 'aria-label': 'Show the full event' }, '▸');
    const tr = h(
      'tr.event' + (fresh ? '.fresh' : ''),
      { dataset: { id: (e.ward && e.ward.id) || '' } },
      h('td', null, toggle),
      h('td.time', null, fmtTime(e.timestamp)),
      h('td', null, h('span.badge.src', null, e.source || '')),
      h('td.who', { title: who }, who),
      h('td.what', { title: what }, what),
    );
    const flip = () => {
      const open = detail.hidden;
      detail.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      toggle.textContent = open ? '▾' : '▸';
      tr.classList.toggle('open', open);
      if (open && !detail.firstChild.firstChild) detail.firstChild.append(eventDetail(e));
    };
    toggle.addEventListener('click', (ev) => { ev.stopPropagation(); flip(); });
    tr.addEventListener('click', (ev) => { if (!ev.target.closest('a,button') && !window.getSelection().toString()) flip(); });
    return [tr, detail];
  }

  function eventDetail(e) {
    const pivots = entities(e).map(([kind, value]) =>
      h('a.chip', { href: href('/timeline', { entity: `${kind}:${value}` }) }, `${kind}: ${value} ⇢ timeline`),
    );
    return h('div.event-detail', null, pivots.length ? h('div.pivots', null, pivots) : null, jsonView(e));
  }

  function drawRows(hits) {
    tbody.replaceChildren(...hits.flatMap((e) => row(e, false)));
  }

  // --- histogram -------------------------------------------------------
  function drawHistogram() {
    if (!lastHistogram) return;
    const { agg, b } = lastHistogram;
    const buckets = (agg.histogram && agg.histogram.buckets) || [];
    const step = intervalMs(agg.histogram && agg.histogram.interval) || 60e3;
    histo.replaceChildren();
    const width = Math.max(200, histo.clientWidth || 800);
    const height = 120;
    const padL = 40, padB = 20, padT = 8;
    let t0 = b.start ? Date.parse(b.start) : null;
    let t1 = b.end ? Date.parse(b.end) : null;
    if (buckets.length) {
      const first = Date.parse(buckets[0].start);
      const last = Date.parse(buckets[buckets.length - 1].start) + step;
      if (t0 === null) t0 = first;
      if (t1 === null) t1 = last;
    }
    if (t0 === null || t1 === null || t1 <= t0) {
      histo.append(h('p.muted.empty', null, 'No matches to chart.'));
      return;
    }
    const max = Math.max(1, ...buckets.map((x) => x.count));
    const x = (t) => padL + ((t - t0) / (t1 - t0)) * (width - padL - 4);
    const y = (c) => padT + (1 - c / max) * (height - padT - padB);
    const chart = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Histogram, ${agg.histogram ? agg.histogram.interval : ''} buckets` });
    chart.append(svg('line', { x1: padL, x2: width - 4, y1: height - padB, y2: height - padB, class: 'axis' }));
    chart.append(svg('text', { x: padL - 6, y: padT + 8, class: 'tick', 'text-anchor': 'end' }, fmtCount(max)));
    chart.append(svg('text', { x: padL - 6, y: height - padB, class: 'tick', 'text-anchor': 'end' }, '0'));
    for (const bk of buckets) {
      const s = Math.max(t0, Date.parse(bk.start));
      const e = Math.min(t1, Date.parse(bk.start) + step);
      if (e <= s || !bk.count) continue;
      const bx = x(s);
      const bw = Math.max(1, x(e) - bx - 1);
      chart.append(
        svg('rect', { x: bx, y: y(bk.count), width: bw, height: height - padB - y(bk.count), class: 'bar', 'data-start': bk.start, 'data-count': bk.count },
          svg('title', null, `${fmtTime(bk.start)}: ${fmtCount(bk.count)}`)),
      );
    }
    const ticks = 5;
    for (let i = 0; i <= ticks; i++) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      const anchor = i === 0 ? 'start' : i === ticks ? 'end' : 'middle';
      chart.append(svg('text', { x: x(t), y: height - 5, class: 'tick', 'text-anchor': anchor }, tickLabel(t, t1 - t0)));
    }
    const sel = svg('rect', { x: 0, y: padT, width: 0, height: height - padT - padB, class: 'selection', visibility: 'hidden' });
    chart.append(sel);
    // Drag to zoom: the selected span becomes an absolute range.
    let from = null;
    const px = (ev) => {
      const r = chart.getBoundingClientRect();
      return Math.min(width - 4, Math.max(padL, ev.clientX - r.left));
    };
    const tAt = (p) => t0 + ((p - padL) / (width - padL - 4)) * (t1 - t0);
    chart.addEventListener('mousedown', (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault();
      from = px(ev);
      sel.setAttribute('x', from);
      sel.setAttribute('width', 0);
      sel.setAttribute('visibility', 'visible');
    });
    const move = (ev) => {
      if (from === null) return;
      const to = px(ev);
      sel.setAttribute('x', Math.min(from, to));
      sel.setAttribute('width', Math.abs(to - from));
    };
    const up = (ev) => {
      if (from === null) return;
      const to = px(ev);
      const a = Math.min(from, to);
      const z = Math.max(from, to);
      from = null;
      sel.setAttribute('visibility', 'hidden');
      if (z - a < 3) {
        // A click on a bar zooms into its bucket.
        const bar = ev.target.closest && ev.target.closest('rect.bar');
        if (!bar) return;
        const s = Date.parse(bar.dataset.start);
        setRange({ kind: 'abs', start: iso(s), end: iso(s + step) });
        return;
      }
      const s = Math.floor(tAt(a) / 1000) * 1000;
      const e = Math.ceil(tAt(z) / 1000) * 1000;
      setRange({ kind: 'abs', start: iso(s), end: iso(Math.max(e, s + 1000)) });
    };
    window.addEventListener('mousemove', move);
    window.addEventListener('mouseup', up, { once: false });
    histoCleanup.push(() => {
      window.removeEventListener('mousemove', move);
      window.removeEventListener('mouseup', up);
    });
    while (histoCleanup.length > 1) histoCleanup.shift()();
    histo.append(chart);
  }
  const histoCleanup = [];

  function tickLabel(t, span) {
    const s = new Date(t).toISOString();
    if (span > 3 * 86400e3) return s.slice(0, 10);
    if (span > 86400e3) return s.slice(5, 16).replace('T', ' ');
    return s.slice(11, 19);
  }

  // --- field sidebar ---------------------------------------------------
  function drawFacets(signal, gen, base) {
    sidebar.replaceChildren(h('h2', null, 'Fields'));
    for (const field of FACETS) {
      const body = h('div.facet-body');
      const head = h(
        'button.facet-name',
        { type: 'button', 'aria-expanded': String(openFacets.has(field)), dataset: { field } },
        field,
      );
      const box = h('div.facet', { dataset: { field } }, head, body);
      head.addEventListener('click', () => {
        if (openFacets.has(field)) {
          openFacets.delete(field);
          head.setAttribute('aria-expanded', 'false');
          body.replaceChildren();
        } else {
          openFacets.add(field);
          head.setAttribute('aria-expanded', 'true');
          loadFacet(field, body, signal, gen, base);
        }
      });
      sidebar.append(box);
      if (openFacets.has(field)) loadFacet(field, body, signal, gen, base);
    }
  }

  async function loadFacet(field, body, signal, gen, base) {
    body.replaceChildren(h('span.muted', null, 'Loading…'));
    try {
      const res = await api.get('/api/v1/aggregate', { ...base, terms: field, size: 8 }, signal);
      if (gen !== generation) return;
      const buckets = (res.terms && res.terms.buckets) || [];
      if (!buckets.length) {
        body.replaceChildren(h('span.muted', null, 'No values'));
        return;
      }
      const max = Math.max(...buckets.map((x) => x.count));
      body.replaceChildren(
        h(
          'ul.values',
          null,
          buckets.map((bk) => {
            const meter = h('span.meter');
            meter.style.width = `${Math.round((bk.count / max) * 100)}%`;
            return h(
              'li',
              null,
              h('button.value', { type: 'button', title: `Filter for ${field}:${bk.key}`, dataset: { value: bk.key }, onclick: () => filter(field, bk.key, false) },
                h('span.v', null, bk.key || '(empty)'), h('span.n', null, fmtCount(bk.count)), meter),
              h('button.neg', { type: 'button', title: `Filter out ${field}:${bk.key}`, 'aria-label': `Filter out ${bk.key}`, dataset: { value: bk.key }, onclick: () => filter(field, bk.key, true) }, '−'),
            );
          }),
        ),
      );
    } catch (err) {
      if (gen !== generation || err.name === 'AbortError') return;
      body.replaceChildren(h('span.msg.error', null, err.message));
    }
  }

  function filter(field, value, negate) {
    input.value = addFilter(input.value, field, value, negate);
    submit();
  }

  // --- live tail -------------------------------------------------------
  function startTail() {
    const controller = new AbortController();
    tailing = controller;
    tailBtn.setAttribute('aria-pressed', 'true');
    tailBtn.textContent = 'Stop tail';
    live.hidden = false;
    pager.hidden = true;
    const query = q;
    tailBtn.dataset.state = 'connecting';
    tail(query, {
      includeWard,
      signal: controller.signal,
      onOpen: () => { if (tailing === controller) tailBtn.dataset.state = 'live'; },
      onHit: (e) => {
        if (tailing !== controller) return;
        tbody.prepend(...row(e, true));
        // Keep at most a page of events in the page.
        while (tbody.querySelectorAll('tr.event').length > PAGE) {
          tbody.lastElementChild.remove();
          tbody.lastElementChild.remove();
        }
        msg(status, '', '');
      },
      onLag: (n) => msg(status, 'warn', `Live tail fell behind: ${fmtCount(n)} commits were skipped.`),
    }).then(
      () => { if (tailing === controller) stopTail('The server closed the live tail.'); },
      (err) => { if (tailing === controller && err.name !== 'AbortError') stopTail(err.message); },
    );
  }

  function stopTail(note) {
    if (tailing) tailing.abort();
    tailing = null;
    tailBtn.dataset.state = 'off';
    tailBtn.setAttribute('aria-pressed', 'false');
    tailBtn.textContent = 'Live tail';
    live.hidden = true;
    pager.hidden = false;
    if (note) msg(status, 'warn', note);
  }

  function restartTail() {
    stopTail();
    startTail();
  }

  tailBtn.addEventListener('click', () => (tailing ? stopTail() : startTail()));

  const onResize = () => drawHistogram();
  window.addEventListener('resize', onResize);

  renderPicker();
  run();

  return () => {
    generation++;
    if (inflight) inflight.abort();
    stopTail();
    window.removeEventListener('resize', onResize);
    document.removeEventListener('mousedown', onDocClick);
    document.removeEventListener('keydown', onDocKey);
    while (histoCleanup.length) histoCleanup.shift()();
  };
}
