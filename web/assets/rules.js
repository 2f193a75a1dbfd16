// Rules: the rules the indexer runs (level, where each came from, alerts
// raised), the documents that failed to load, and a retro-hunt of the
// live rules over a past time range (for roles that may triage).

import { api } from './api.js';
import { h, href, fmtTime, fmtCount, iso, levelBadge, msg, term } from './dom.js';

const LEVEL_ORDER = ['critical', 'high', 'medium', 'low', 'informational'];
/** Alerts a hunt from the dashboard returns at most. */
const HUNT_MAX = 500;

export function render(main, params, ctx) {
  const note = h('div.msg', { role: 'status' });
  const errors = h('div.rule-errors');
  const table = h('div.rules-table');
  const hunt = h('div.hunt');
  let gone = false;

  main.append(h('section.page', null, h('div.page-head', null, h('h1', null, 'Rules')), note, errors, ctx.me.may.triage ? hunt : null, table));

  async function load() {
    msg(note, 'muted', 'Loading…');
    let res;
    try {
      res = await api.get('/api/v1/rules');
    } catch (err) {
      if (!gone) msg(note, 'error', err.status === 404 ? 'This indexer keeps no alerts, so it runs no rules.' : err.message);
      return;
    }
    if (gone) return;
    msg(note, '', res.enabled ? `${fmtCount(res.count)} rules loaded` : 'This indexer runs no rules (--no-builtin-rules and no --rules).');
    errors.replaceChildren(
      ...(res.errors.length
        ? [
            h('h2', null, `Load errors (${res.errors.length})`),
            h('ul.errors', null, res.errors.map((e) => h('li', null, h('code', null, e.source + (e.document ? ` #${e.document}` : '')), e.rule ? ` ${e.rule}: ` : ': ', e.error))),
          ]
        : []),
    );
    const rules = [...res.rules].sort((a, b) => LEVEL_ORDER.indexOf(a.level) - LEVEL_ORDER.indexOf(b.level) || a.title.localeCompare(b.title));
    table.replaceChildren(
      h(
        'table.rules',
        { id: 'rules' },
        h('thead', null, h('tr', null, h('th', null, 'Level'), h('th', null, 'Rule'), h('th', null, 'Source'), h('th.num', null, 'Open'), h('th.num', null, 'Alerts'))),
        h(
          'tbody',
          null,
          rules.map((r) =>
            h(
              'tr',
              { dataset: { id: r.id } },
              h('td', null, levelBadge(r.level)),
              h('td', null, h('div', { title: r.description || '' }, r.title, r.correlation ? h('span.chip', null, 'correlation') : null), h('div.muted.small', null, r.id)),
              h('td', null, h('span.badge.src', null, r.source === 'builtin' ? 'built-in' : r.source), ' ', h('code.path', { title: r.path }, r.path)),
              h('td.num', null, r.open ? h('a', { href: href('/alerts', { rule: r.id }) }, fmtCount(r.open)) : '0'),
              h('td.num', null, r.alerts ? h('a', { href: href('/alerts', { rule: r.id, status: 'all' }) }, fmtCount(r.alerts)) : '0'),
            ),
          ),
        ),
      ),
    );
  }

  function drawHunt() {
    const now = Date.now();
    const startIn = h('input', { id: 'hunt-start', type: 'text', value: iso(now - 86400e3), required: true });
    const endIn = h('input', { id: 'hunt-end', type: 'text', value: iso(now), required: true });
    const out = h('div.hunt-out', { id: 'hunt-out' });
    const run = h('button.primary', { type: 'submit' }, 'Run retro-hunt');
    hunt.replaceChildren(
      h('h2', null, 'Retro-hunt'),
      h('p.muted', null, 'Run the loaded rules over audit events already indexed in a time range. Nothing is stored: the alerts are shown here.'),
      h(
        'form.hunt-form',
        {
          onsubmit: async (e) => {
            e.preventDefault();
            const s = Date.parse(startIn.value);
            const en = Date.parse(endIn.value);
            if (Number.isNaN(s) || Number.isNaN(en)) return msg(out, 'error', 'Give the start and end as RFC 3339 times.');
            run.disabled = true;
            msg(out, 'muted', 'Hunting…');
            try {
              const res = await api.post('/api/v1/rules/hunt', { start: iso(s), end: iso(en), max_alerts: HUNT_MAX });
              drawReport(out, res);
            } catch (err) {
              msg(out, 'error', err.message);
            } finally {
              run.disabled = false;
            }
          },
        },
        h('label', { for: 'hunt-start' }, 'From'),
        startIn,
        h('label', { for: 'hunt-end' }, 'To'),
        endIn,
        run,
      ),
      out,
    );
  }

  function drawReport(out, res) {
    out.className = 'hunt-out';
    out.replaceChildren(
      h('p', null, `${fmtCount(res.events)} audit events checked by ${fmtCount(res.rules)} rules: `, h('strong', null, `${fmtCount(res.alerts.length)} alerts`), res.truncated ? ` (stopped at ${HUNT_MAX})` : ''),
      res.alerts.length
        ? h(
            'table.hunt-alerts',
            null,
            h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Level'), h('th', null, 'Rule'), h('th', null, 'Events'))),
            h(
              'tbody',
              null,
              res.alerts.slice(0, 200).map((a) =>
                h(
                  'tr',
                  null,
                  h('td.time', null, fmtTime(a.timestamp)),
                  h('td', null, levelBadge(a.level)),
                  h('td', null, a.title),
                  h('td', null, h('a', { href: href('/search', { q: (a.audit_ids || []).slice(0, 20).map((id) => `auditID:${term(id)}`).join(' OR ') || `ward.id:${term(a.event_id)}`, range: 'all' }) }, 'Open in Search')),
                ),
              ),
            ),
          )
        : '',
    );
  }

  if (ctx.me.may.triage) drawHunt();
  load();
  return () => { gone = true; };
}
