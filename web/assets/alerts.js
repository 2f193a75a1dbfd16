// Alerts: what the rules raised, by level and rule, with the triggering
// events, acknowledge and close (for roles that may triage), and a link
// that opens the events in Search.

import { api } from './api.js';
import { h, href, fmtTime, fmtCount, levelBadge, jsonView, summary, msg, term } from './dom.js';

const LEVELS = ['critical', 'high', 'medium', 'low', 'informational'];
const STATUSES = ['open', 'acknowledged', 'closed'];
/** Alerts listed at once. */
const LIMIT = 200;
/** Triggering events shown (and put in the Search link) per alert. */
const EVENTS = 20;

/** The Search link of an alert: its triggering events by `auditID`. */
export function eventsQuery(alert) {
  const ids = (alert.audit_ids || []).slice(0, EVENTS);
  if (ids.length) return ids.map((id) => `auditID:${term(id)}`).join(' OR ');
  return (alert.event_ids || []).slice(0, EVENTS).map((id) => `ward.id:${term(id)}`).join(' OR ');
}

export function render(main, params, ctx) {
  const status = params.get('status') ?? 'open';
  const level = params.get('level') || '';
  const rule = params.get('rule') || '';
  const mayTriage = ctx.me.may.triage;
  const note = h('div.msg', { role: 'status' });
  const summaryBox = h('div.alert-summary');
  const list = h('div.alert-list', { id: 'alert-list' });
  let gone = false;

  const statusSel = h(
    'select',
    { id: 'alert-status', onchange: () => go({ status: statusSel.value }) },
    [...STATUSES, 'all'].map((s) => h('option', { value: s === 'all' ? 'all' : s, selected: (status || 'all') === s }, s)),
  );
  const levelSel = h(
    'select',
    { id: 'alert-level', onchange: () => go({ level: levelSel.value }) },
    h('option', { value: '' }, 'any level'),
    LEVELS.map((l) => h('option', { value: l, selected: level === l }, l)),
  );

  function go(change) {
    const p = { status, level, rule, ...change };
    if (p.status === 'open') p.status = '';
    ctx.navigate(href('/alerts', p));
  }

  main.append(
    h(
      'section.page',
      null,
      h(
        'div.page-head',
        null,
        h('h1', null, 'Alerts'),
        h('label', { for: 'alert-status' }, 'Status'),
        statusSel,
        h('label', { for: 'alert-level' }, 'Level'),
        levelSel,
        rule ? h('span.chip', null, `rule ${rule} `, h('a', { href: href('/alerts', { status: params.get('status'), level }), 'aria-label': 'Clear the rule filter' }, '✕')) : null,
      ),
      note,
      summaryBox,
      list,
    ),
  );

  async function load() {
    msg(note, 'muted', 'Loading…');
    let res;
    try {
      res = await api.get('/api/v1/alerts', { status: status === 'all' ? '' : status, level, rule, limit: LIMIT });
    } catch (err) {
      if (!gone) msg(note, 'error', err.status === 404 ? 'This indexer keeps no alerts.' : err.message);
      return;
    }
    if (gone) return;
    msg(note, '', res.count >= LIMIT ? `Showing the newest ${LIMIT}; narrow by level or rule to see more.` : '');
    drawSummary(res.alerts);
    list.replaceChildren(...res.alerts.map(card));
    if (!res.alerts.length) list.append(h('p.muted', null, `No ${status === 'all' ? '' : status + ' '}alerts.`));
  }

  function drawSummary(alerts) {
    const byLevel = Object.fromEntries(LEVELS.map((l) => [l, 0]));
    const byRule = new Map();
    for (const a of alerts) {
      byLevel[a.level] = (byLevel[a.level] || 0) + 1;
      const r = byRule.get(a.rule_id) || { title: a.title, level: a.level, count: 0 };
      r.count++;
      byRule.set(a.rule_id, r);
    }
    const rules = [...byRule.entries()].sort((a, b) => LEVELS.indexOf(a[1].level) - LEVELS.indexOf(b[1].level) || b[1].count - a[1].count);
    summaryBox.replaceChildren(
      h(
        'div.levels',
        { 'aria-label': 'By level' },
        LEVELS.map((l) =>
          h('a.level-count', { href: href('/alerts', { status: params.get('status'), level: level === l ? '' : l, rule }), 'aria-pressed': String(level === l) }, levelBadge(l), h('strong', null, fmtCount(byLevel[l]))),
        ),
      ),
      h(
        'div.by-rule-wrap',
        null,
        h(
        'table.by-rule',
        null,
        h('thead', null, h('tr', null, h('th', null, 'Rule'), h('th', null, 'Level'), h('th.num', null, 'Alerts'))),
        h(
          'tbody',
          null,
          rules.map(([id, r]) =>
            h('tr', null, h('td', null, h('a', { href: href('/alerts', { status: params.get('status'), level, rule: id }) }, r.title)), h('td', null, levelBadge(r.level)), h('td.num', null, fmtCount(r.count))),
          ),
        ),
      ),
      ),
    );
  }

  function card(a) {
    const events = h('div.alert-events');
    const detail = h('div.alert-detail', { hidden: true });
    const toggle = h('button.expand', { type: 'button', 'aria-expanded': 'false', 'aria-label': `Show the events of alert ${a.id}` }, '▸');
    const buttons = h('span.actions');
    const statusBadge = h(`span.badge.status.status-${a.status}`, { dataset: { status: a.status } }, a.status);
    const el = h(
      'article.alert',
      { dataset: { id: a.id, status: a.status } },
      h(
        'div.alert-head',
        null,
        toggle,
        levelBadge(a.level),
        h('span.alert-title', null, a.title),
        statusBadge,
        h('span.muted.alert-meta', null, [fmtTime(a.timestamp), a.user && `user ${a.user}`, a.namespace && `ns ${a.namespace}`, a.cluster].filter(Boolean).join(' · ')),
        h('span.spacer'),
        h('a.button', { href: href('/search', { q: eventsQuery(a), range: 'all' }) }, 'Open in Search'),
        buttons,
      ),
      detail,
    );
    function drawButtons(current) {
      buttons.replaceChildren();
      if (!mayTriage) return;
      if (current === 'open') buttons.append(h('button', { type: 'button', dataset: { action: 'acknowledged' }, onclick: () => change('acknowledged') }, 'Acknowledge'));
      if (current !== 'closed') buttons.append(h('button', { type: 'button', dataset: { action: 'closed' }, onclick: () => change('closed') }, 'Close'));
      else buttons.append(h('button', { type: 'button', dataset: { action: 'open' }, onclick: () => change('open') }, 'Reopen'));
    }
    async function change(next) {
      for (const b of buttons.querySelectorAll('button')) b.disabled = true;
      try {
        const updated = await api.post(`/api/v1/alerts/${a.id}/status`, { status: next });
        Object.assign(a, updated);
        el.dataset.status = a.status;
        statusBadge.textContent = a.status;
        statusBadge.className = `badge status status-${a.status}`;
        statusBadge.dataset.status = a.status;
        drawButtons(a.status);
        if (!detail.hidden) drawDetail();
      } catch (err) {
        drawButtons(a.status);
        buttons.append(h('span.msg.error', null, err.message));
      }
    }
    function drawDetail() {
      // replaceChildren() would print a null as text: filter first.
      const parts = [
        a.description ? h('p.description', null, a.description) : null,
        a.tags && a.tags.length ? h('p', null, a.tags.map((t) => h('span.chip', null, t))) : null,
        a.group ? h('p', null, 'Group: ', Object.entries(a.group).map(([k, v]) => h('code', null, `${k}=${v ?? 'null'} `))) : null,
        h('h3', null, 'History'),
        h('ol.history', null, a.history.map((c) => h('li', null, h('strong', null, c.status), ` by ${c.by} at ${fmtTime(c.at)}`, c.comment ? ` — ${c.comment}` : ''))),
        h('h3', null, 'Triggering events'),
        events,
      ];
      detail.replaceChildren(...parts.filter(Boolean));
    }
    async function loadEvents() {
      events.replaceChildren(h('span.muted', null, 'Loading…'));
      try {
        const res = await api.get('/api/v1/search', { q: eventsQuery(a), limit: EVENTS, order: 'oldest' });
        events.replaceChildren(
          ...res.hits.map((e) => {
            const s = summary(e);
            return h('details.event', null, h('summary', null, h('span.time', null, fmtTime(e.timestamp)), ' ', s.who, ' — ', s.what), jsonView(e));
          }),
        );
        if (!res.hits.length) events.append(h('span.muted', null, 'The events are not in the index (or outside your namespaces).'));
      } catch (err) {
        events.replaceChildren(h('span.msg.error', null, err.message));
      }
    }
    toggle.addEventListener('click', () => {
      const open = detail.hidden;
      detail.hidden = !open;
      toggle.setAttribute('aria-expanded', String(open));
      toggle.textContent = open ? '▾' : '▸';
      if (open) {
        drawDetail();
        loadEvents();
      }
    });
    drawButtons(a.status);
    return el;
  }

  load();
  return () => {
    gone = true;
  };
}
