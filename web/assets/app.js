// The dashboard's shell: who is signed in and what their role may do, the
// client-side router (each page is a module with render()), the theme, and
// the keyboard shortcut `/`.

import { api, setToken, token, ApiError } from './api.js';
import { h, msg } from './dom.js';
import * as search from './search.js';
import * as alerts from './alerts.js';
import * as timeline from './timeline.js';
import * as rules from './rules.js';

const PAGES = { search, alerts, timeline, rules };
const main = document.getElementById('main');
const ctx = { me: null, navigate };
let cleanup = null;

// Theme: the system's unless the user picked one here.
const THEME_KEY = 'ward.theme';
function currentTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved === 'dark' || saved === 'light') return saved;
  return matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}
function applyTheme() {
  const theme = currentTheme();
  document.documentElement.dataset.theme = theme;
  const btn = document.getElementById('theme-toggle');
  const other = theme === 'dark' ? 'light' : 'dark';
  btn.textContent = other === 'dark' ? 'Dark' : 'Light';
  btn.setAttribute('aria-label', `Switch to the ${other} theme`);
}
document.getElementById('theme-toggle').addEventListener('click', () => {
  localStorage.setItem(THEME_KEY, currentTheme() === 'dark' ? 'light' : 'dark');
  applyTheme();
});
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', applyTheme);
applyTheme();

export function navigate(path, replace) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

function pageName() {
  const name = location.pathname.replace(/^\/+/, '').split('/')[0];
  return PAGES[name] ? name : 'search';
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A page that failed to clean up must not block the next one.
    }
    cleanup = null;
  }
  if (!ctx.me) return;
  const name = pageName();
  if (location.pathname === '/' || location.pathname === '/index.html') {
    history.replaceState(null, '', '/search' + location.search);
  }
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · Ward`;
  main.replaceChildren();
  const params = new URLSearchParams(location.search);
  const result = PAGES[name].render(main, params, ctx);
  cleanup = typeof result === 'function' ? result : null;
}

// Links inside the app change the page without a reload.
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.hash) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', route);

// `/` focuses the query bar (as in Kibana and Grafana), from any page.
document.addEventListener('keydown', (e) => {
  if (e.key !== '/' || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  e.preventDefault();
  if (!document.getElementById('query')) navigate('/search');
  const bar = document.getElementById('query');
  if (bar) bar.focus();
});

function showWho() {
  const who = document.getElementById('who');
  const out = document.getElementById('sign-out');
  const me = ctx.me;
  who.replaceChildren();
  if (me && me.auth) {
    who.append(h('span', null, me.name), ' ', h('span.badge.role', null, me.role));
    out.hidden = false;
  } else {
    out.hidden = true;
    // Without tokens the API is open to anyone who can reach it: say so.
    if (me && me.warning) who.append(h('span.badge.open', { title: me.warning }, 'open: no tokens'));
  }
  // Signed out, there is nowhere to go but the sign-in form.
  document.querySelector('header.top nav').hidden = !me;
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    const hide = me && (a.dataset.page === 'alerts' || a.dataset.page === 'rules') && (!me.alerts || !me.may.alerts);
    a.hidden = Boolean(hide);
  }
}

document.getElementById('sign-out').addEventListener('click', () => {
  setToken('');
  ctx.me = null;
  showWho();
  signIn();
});

window.addEventListener('ward:unauthorized', () => {
  if (ctx.me && ctx.me.auth) {
    setToken('');
    ctx.me = null;
    showWho();
    signIn('The session ended or the token was revoked: sign in again.');
  }
});

function signIn(note) {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const status = h('p.msg', { role: 'alert' });
  const input = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    autocomplete: 'current-password',
    required: true,
    placeholder: 'API token',
  });
  const form = h(
    'form.signin.card',
    {
      onsubmit: async (e) => {
        e.preventDefault();
        setToken(input.value.trim());
        try {
          await start();
        } catch (err) {
          setToken('');
          msg(status, 'error', err.status === 401 ? 'This token is not valid.' : err.message);
        }
      },
    },
    h('h1', null, 'Sign in to Ward'),
    h('p.muted', null, 'Paste an API token (viewer, analyst or admin). It is kept for this browser tab only.'),
    h('label', { for: 'token' }, 'Token'),
    input,
    h('button.primary', { type: 'submit' }, 'Sign in'),
    status,
  );
  if (note) msg(status, 'error', note);
  main.replaceChildren(form);
  document.title = 'Sign in · Ward';
  input.focus();
}

async function start() {
  const me = await api.get('/api/v1/whoami');
  if (me.auth && me.role === 'ingest') {
    throw new ApiError(403, { error: 'An ingest token cannot use the dashboard.' });
  }
  ctx.me = me;
  showWho();
  await route();
}

start().catch((err) => {
  if (err.status === 401) signIn(token() ? 'This token is not valid.' : null);
  else main.replaceChildren(h('p.msg.error.pad', null, `Cannot reach the Ward API: ${err.message}`));
});
