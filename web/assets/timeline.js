// Timeline: everything one user, IP or pod did, oldest first, with the
// alerts raised on those events and the entities it touched, each a link
// to pivot to that entity's timeline or a search.

import { api } from './api.js';
import { h, href, fmtTime, fmtCount, levelBadge, jsonView, summary, entities, msg, term } from './dom.js';
import { eventsQuery } from './alerts.js';

/** Events per page. */
const PAGE = 100;
const KINDS = [
  ['user', 'User', 'system:serviceaccount:default:builder'],
  ['ip', 'IP address', '10.0.0.12 or 10.0.0.0/8'],
  ['pod', 'Pod', 'namespace/name'],
];

export function render(main, params, ctx) {
  const entity = params.get('entity') || '';
  const [kind0, ...rest] = entity.split(':');
  const kind = KINDS.some((k) => k[0] === kind0) ? kind0 : 'user';
  const value = rest.join(':');
  const start = params.get('start') || '';
  const end = params.get('end') || '';
  const note = h('div.msg', { role: 'status' });
  const body = h('div.timeline-body');
  const cursors = [null];
  let pageIndex = 0;
  let gone = false;

  const kindSel = h('select', { id: 'entity-kind', 'aria-label': 'Entity kind' }, KINDS.map(([k, label]) => h('option', { value: k, selected: k === kind }, label)));
  const valueIn = h('input', { id: 'entity-value', type: 'text', value, required: true, 'aria-label': 'Entity', spellcheck: false });
  const setPlaceholder = () => { valueIn.placeholder = KINDS.find((k) => k[0] === kindSel.value)[2]; };
  kindSel.addEventListener('change', setPlaceholder);
  setPlaceholder();

  main.append(
    h(
      'section.page',
      null,
      h(
        'form.page-head',
        {
          onsubmit: (e) => {
            e.preventDefault();
            ctx.navigate(href('/timeline', { entity: `${kindSel.value}:${valueIn.value.trim()}`, start, end }));
          },
        },
        h('h1', null, 'Timeline'),
        kindSel,
        valueIn,
        h('button.primary', { type: 'submit' }, 'Show'),
      ),
      note,
      body,
    ),
  );

  if (!value) {
    msg(note, 'muted', 'Pick a user, an IP address or a pod (namespace/name) to see its activity in time order. Every user, IP and pod in an event links here.');
    valueIn.focus();
    return () => { gone = true; };
  }

  async function load() {
    msg(note, 'muted', 'Loading…');
    let res;
    try {
      res = await api.get('/api/v1/timeline', { entity, start, end, limit: PAGE, cursor: cursors[pageIndex] });
    } catch (err) {
      if (!gone) msg(note, 'error', err.message);
      return;
    }
    if (gone) return;
    cursors[pageIndex + 1] = res.cursor;
    msg(note, '', '');
    // The server sends the alerts raised by this page's events, oldest first.
    const onEntity = res.alerts || [];
    const byAudit = new Map();
    for (const a of onEntity) for (const id of a.audit_ids || []) {
      if (!byAudit.has(id)) byAudit.set(id, []);
      byAudit.get(id).push(a);
    }
    body.replaceChildren(
      h(
        'div.timeline-grid',
        null,
        h(
          'div.timeline-main',
          null,
          h('h2', null, `${entity} `, h('span.muted', null, `${fmtCount(res.total)} events`), ' ', h('a.small', { href: href('/search', { q: entityQuery(kind, value), range: start || end ? '' : 'all', start, end }) }, 'Open in Search')),
          onEntity.length
            ? h(
                'div.timeline-alerts',
                null,
                h('h3', null, `Alerts (${onEntity.length})`),
                h('ul', null, onEntity.slice(0, 50).map((a) => h('li', null, levelBadge(a.level), ' ', h('a', { href: href('/search', { q: eventsQuery(a), range: 'all' }) }, a.title), h('span.muted', null, ` ${fmtTime(a.timestamp)} · ${a.status}`)))),
              )
            : null,
          h('ol.timeline', { id: 'timeline' }, res.events.map((e) => item(e, byAudit.get(e.auditID) || []))),
          res.events.length ? null : h('p.muted', null, 'No activity in this range.'),
          h(
            'div.pager',
            null,
            h('button', { type: 'button', disabled: pageIndex === 0, onclick: () => { pageIndex--; load(); } }, '← Earlier'),
            h('span.muted', null, `Page ${pageIndex + 1}`),
            h('button', { type: 'button', disabled: !res.cursor, onclick: () => { pageIndex++; load(); } }, 'Later →'),
          ),
        ),
        related(res.related),
      ),
    );
  }

  function item(e, alerts) {
    const s = summary(e);
    const pivots = entities(e).filter(([k, v]) => `${k}:${v}` !== entity);
    return h(
      'li.tl-item' + (alerts.length ? '.has-alert' : ''),
      null,
      h('span.time', null, fmtTime(e.timestamp)),
      h(
        'div.tl-body',
        null,
        h('div', null, h('span.badge.src', null, e.source), ' ', h('strong', null, s.what), ' ', h('span.muted', null, s.who)),
        alerts.length ? h('div', null, alerts.map((a) => h('span.alert-tag', null, levelBadge(a.level), ' ', a.title))) : null,
        pivots.length ? h('div.pivots', null, pivots.map(([k, v]) => h('a.chip', { href: href('/timeline', { entity: `${k}:${v}` }) }, `${k}: ${v}`))) : null,
        h('details', null, h('summary', null, 'Event JSON'), jsonView(e)),
      ),
    );
  }

  function related(r) {
    const section = (title, list, linkOf) =>
      list && list.length
        ? h('div.rel', null, h('h3', null, title), h('ul', null, list.slice(0, 15).map((c) => h('li', null, h('a', { href: linkOf(c.value) }, c.value), h('span.n', null, fmtCount(c.count))))))
        : null;
    const podLink = (v) => (v.includes('/') && !v.startsWith('-/') ? href('/timeline', { entity: `pod:${v}` }) : href('/search', { q: `objectRef.name:${term(v.split('/').pop())}`, range: 'all' }));
    const secretLink = (v) => {
      const [ns, name] = v.split('/');
      const parts = ['objectRef.resource:secrets'];
      if (ns && ns !== '-') parts.push(`objectRef.namespace:${term(ns)}`);
      if (name && name !== '*') parts.push(`objectRef.name:${term(name)}`);
      return href('/search', { q: parts.join(' AND '), range: 'all' });
    };
    return h(
      'aside.related',
      { 'aria-label': 'Entities it touched' },
      h('h2', null, 'Touched'),
      section('Pods exec’d or attached', r.pods_exec, podLink),
      section('Secrets read', r.secrets_read, secretLink),
      section('Source IPs', r.source_ips, (v) => href('/timeline', { entity: `ip:${v}` })),
      section('Users', r.users, (v) => href('/timeline', { entity: `user:${v}` })),
      section('Namespaces', r.namespaces, (v) => href('/search', { q: `objectRef.namespace:${term(v)} OR kubernetes.namespace:${term(v)}`, range: 'all' })),
    );
  }

  load();
  return () => { gone = true; };
}

/** The Search query of an entity (the server builds the same for the timeline). */
function entityQuery(kind, value) {
  if (kind === 'user') return `user.username:${term(value)} OR impersonatedUser.username:${term(value)}`;
  if (kind === 'ip') return `sourceIPs:${term(value)}`;
  const [ns, name] = value.split('/');
  return `(kubernetes.namespace:${term(ns)} AND kubernetes.pod:${term(name)}) OR (objectRef.resource:pods AND objectRef.namespace:${term(ns)} AND objectRef.name:${term(name)})`;
}
