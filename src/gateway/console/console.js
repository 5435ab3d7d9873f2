// The switchboard console: reads the admin API of the gateway that served it and shows it.
// Everything the gateway sends is put in the page as text (textContent), never as markup: run
// errors and step outputs can carry anything.
'use strict';

const POLL_MS = 1000;          // GET /admin/overview at most once a second
const RUNS_EVERY = 2;          // the workflow runs every other poll
const KEY_STORE = 'switchboard.adminKey';

const state = {
  adminKey: sessionStorage.getItem(KEY_STORE) || '',
  tick: 0,
  lastOk: 0,
  overview: null,
  selectedRun: '',
  timer: 0,
};

// ---- small DOM helpers ---------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === 'style') node.style.cssText = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = dv;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// Rows keyed by `id`: a row is rebuilt only when its signature changed, so that a button under
// the pointer is not replaced by an identical one between mousedown and click.
function syncRows(tbody, items, id, signature, build) {
  const existing = new Map();
  for (const row of [...tbody.children]) {
    if (row.dataset.id !== undefined) existing.set(row.dataset.id, row);
    else row.remove();  // the "nothing here" row
  }
  const rows = items.map(item => {
    const key = id(item), sig = signature(item);
    let row = existing.get(key);
    existing.delete(key);
    if (!row || row.dataset.sig !== sig) {
      const fresh = build(item);
      fresh.dataset.id = key;
      fresh.dataset.sig = sig;
      if (row) row.replaceWith(fresh);
      row = fresh;
    }
    return row;
  });
  for (const row of existing.values()) row.remove();
  rows.forEach((row, i) => {
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
  });
}

function emptyRow(tbody, columns, text) {
  tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: columns }, text)));
}

// ---- formatting ------------------------------------------------------------------------------

function pct(x) { return (100 * x).toFixed(x > 0 && x < 0.1 ? 1 : 0) + '%'; }
function usd(x) { return '$' + (x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(4)); }
function ms(x) {
  if (x >= 60000) return (x / 60000).toFixed(1) + ' min';
  if (x >= 1000) return (x / 1000).toFixed(1) + ' s';
  return Math.round(x) + ' ms';
}
function clock(epochMs) {
  return epochMs ? new Date(epochMs).toLocaleTimeString([], { hour12: false }) : '';
}
function label(s) { return String(s || '').replace(/_/g, ' '); }

// A countdown that the 4 Hz timer keeps current between polls.
function countdown(remainingMs, prefix) {
  const span = el('span', { class: 'countdown', data: { deadline: String(performance.now() + remainingMs), prefix: prefix || '' } });
  span.textContent = (prefix || '') + ms(remainingMs);
  return span;
}

function refreshCountdowns() {
  const now = performance.now();
  for (const span of document.querySelectorAll('.countdown')) {
    const left = Math.max(0, Number(span.dataset.deadline) - now);
    span.textContent = span.dataset.prefix + ms(left);
  }
  if (state.lastOk) {
    const age = (Date.now() - state.lastOk) / 1000;
    $('updated').textContent = `updated ${age < 1.5 ? 'just now' : age.toFixed(0) + ' s ago'}`;
    if (age > 5) setStatus('stale', 'stale');
  }
}

function setStatus(status, text) {
  const pill = $('status');
  pill.dataset.status = status;
  pill.textContent = text;
}

function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

// ---- the admin API ---------------------------------------------------------------------------

async function api(path, options) {
  const headers = {};
  if (state.adminKey) headers.Authorization = 'Bearer ' + state.adminKey;
  const res = await fetch(path, { ...(options || {}), headers, cache: 'no-store' });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  return { status: res.status, body };
}

function errorText(r) {
  return (r.body && r.body.error && r.body.error.message) || `HTTP ${r.status}`;
}

async function keyAction(id, action) {
  const r = await api(`/admin/keys/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
  toast(r.status === 200 ? `${id} ${action}d` : `${id}: ${errorText(r)}`);
  poll(true);
}

async function cancelRun(id) {
  const r = await api(`/admin/runs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
  toast(r.status === 202 ? `cancelling ${id}` : `${id}: ${errorText(r)}`);
  poll(true);
}

// ---- sections --------------------------------------------------------------------------------

function keyState(k) {
  const cell = el('td', { class: 'state' });
  cell.append(el('span', { class: 'badge', data: { state: k.state } }, label(k.state)));
  if (k.state === 'cooling') {
    cell.append(' ', countdown(k.cooldown_remaining_ms),
      el('span', { class: 'muted' }, ` ${label(k.cooldown_reason)}`));
  }
  for (const mc of k.model_cooldowns || []) {
    cell.append(el('div', { class: 'model-cooldown', data: { model: mc.model } },
      el('span', { class: 'badge', data: { state: 'cooling' } }, mc.model), ' ',
      countdown(mc.remaining_ms), el('span', { class: 'muted' }, ` ${label(mc.reason)}`)));
  }
  return cell;
}

function meter(used, max) {
  if (!max) return el('span', {}, String(used));
  const ratio = Math.min(1, used / max);
  return el('span', { class: 'meter-wrap' },
    el('span', { class: 'meter' }, el('span', { class: ratio >= 1 ? 'fill full' : 'fill', style: `width:${(100 * ratio).toFixed(0)}%` })),
    ` ${used} / ${max}`);
}

function renderKeys(keys) {
  $('keys-count').textContent = `(${keys.length})`;
  const tbody = $('keys').tBodies[0];
  if (!keys.length) return emptyRow(tbody, 8, 'no keys configured');
  syncRows(tbody, keys, k => k.id,
    // Countdowns run on their own: the signature leaves the remaining times out.
    k => JSON.stringify([k.state, k.cooldown_reason, k.in_flight, k.max_concurrent, k.minute, k.day,
      k.consecutive_failures, (k.model_cooldowns || []).map(m => [m.model, m.reason]),
      Math.round(k.cooldown_remaining_ms / 1000)]),
    k => {
      const disabled = k.state === 'disabled';
      return el('tr', { data: { key: k.id, state: k.state } },
        el('td', {}, el('code', {}, k.id), el('div', { class: 'muted small' }, k.fingerprint)),
        el('td', {}, k.provider),
        keyState(k),
        el('td', {}, meter(k.in_flight, k.max_concurrent)),
        el('td', {}, `${k.minute.requests} req · ${k.minute.tokens} tok`),
        el('td', {}, `${k.day.requests} req · ${k.day.tokens} tok`),
        el('td', {}, String(k.consecutive_failures)),
        el('td', {}, el('button', {
          type: 'button', class: disabled ? 'enable' : 'disable',
          onclick: () => keyAction(k.id, disabled ? 'enable' : 'disable'),
        }, disabled ? 'Enable' : 'Disable')));
    });
}

function renderBreakers(breakers, history) {
  const tbody = $('breakers').tBodies[0];
  if (!breakers.length) emptyRow(tbody, 7, 'no breaker has seen a call yet');
  else syncRows(tbody, breakers, b => b.target,
    b => JSON.stringify([b.state, b.calls_in_window, b.failure_rate, b.slow_call_rate,
      b.consecutive_openings, Math.round(b.until_half_open_ms / 1000)]),
    b => el('tr', { data: { target: b.target, state: b.state } },
      el('td', {}, el('code', {}, b.target)),
      el('td', {}, el('span', { class: 'badge', data: { state: b.state } }, label(b.state))),
      el('td', {}, String(b.calls_in_window)),
      el('td', {}, rateBar(b.failure_rate)),
      el('td', {}, rateBar(b.slow_call_rate)),
      el('td', {}, b.state === 'open' ? countdown(b.until_half_open_ms) : ''),
      el('td', {}, String(b.consecutive_openings))));
  const list = $('breaker-history');
  const recent = history.slice(-12).reverse();
  list.replaceChildren(...(recent.length ? recent.map(h => el('li', {},
    el('span', { class: 'muted' }, clock(h.at_ms)), ' ', el('code', {}, h.target), ' ',
    el('span', { class: 'badge', data: { state: h.from } }, label(h.from)), ' → ',
    el('span', { class: 'badge', data: { state: h.to } }, label(h.to))))
    : [el('li', { class: 'muted' }, 'no transitions since the gateway started')]));
}

function rateBar(rate) {
  return el('span', { class: 'meter-wrap' },
    el('span', { class: 'meter' }, el('span', { class: rate >= 0.5 ? 'fill full' : 'fill', style: `width:${(100 * rate).toFixed(0)}%` })),
    ' ' + pct(rate));
}

function renderModels(models, posteriors) {
  const tbody = $('models').tBodies[0];
  if (!models.length) emptyRow(tbody, 9, 'no models configured');
  else syncRows(tbody, models, m => m.model, m => JSON.stringify(m),
    m => el('tr', { data: { model: m.model } },
      el('td', {}, el('code', {}, m.model)),
      el('td', {}, m.provider),
      el('td', {}, m.tier),
      el('td', {}, String(m.requests)),
      el('td', {}, m.requests ? pct(m.success_rate) : ''),
      el('td', {}, m.requests ? ms(m.latency_p50_ms) : ''),
      el('td', {}, m.requests ? ms(m.latency_p95_ms) : ''),
      el('td', {}, usd(m.spend_usd)),
      el('td', {}, m.quota)));
  renderPosteriors(posteriors);
  const rows = [];
  for (const m of models)
    for (const c of m.contextual || []) rows.push({ ...c, model: m.model });
  const cbody = $('contextual').tBodies[0];
  if (!rows.length) emptyRow(cbody, 4, 'no contextual lessons yet (learned routes, requests without a category hint)');
  else syncRows(cbody, rows, r => `${r.model} ${r.route}`, r => JSON.stringify(r),
    r => el('tr', { data: { model: r.model, route: r.route } },
      el('td', {}, el('code', {}, r.model)),
      el('td', {}, el('code', {}, r.route)),
      el('td', {}, String(r.updates)),
      el('td', { class: 'features' }, ...r.strongest.map(f => el('span', {
        class: f.weight >= 0 ? 'chip plus' : 'chip minus', title: f.weight.toFixed(3),
      }, `${f.feature} ${f.weight >= 0 ? '+' : ''}${f.weight.toFixed(2)}`)))));
}

// One small chart per category: each model's posterior mean with its 90% interval (the normal
// approximation of its Beta distribution), on a 0-100% axis.
function renderPosteriors(posteriors) {
  const box = $('posteriors');
  const byCategory = new Map();
  for (const p of posteriors) {
    if (!byCategory.has(p.category)) byCategory.set(p.category, []);
    byCategory.get(p.category).push(p);
  }
  const sig = JSON.stringify(posteriors.map(p => [p.category, p.model, p.alpha.toFixed(2), p.beta.toFixed(2)]));
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  if (!byCategory.size) {
    box.replaceChildren(el('p', { class: 'muted' }, 'nothing learned yet'));
    return;
  }
  const charts = [];
  for (const [category, rows] of [...byCategory.entries()].sort()) {
    rows.sort((a, b) => a.model.localeCompare(b.model));
    const rowH = 18, left = 150, width = 420, top = 6;
    const h = top + rows.length * rowH + 18;
    const chart = svg('svg', { viewBox: `0 0 ${left + width + 60} ${h}`, class: 'chart', role: 'img', 'aria-label': `posteriors of ${category}` });
    for (const t of [0, 0.5, 1]) {
      const x = left + t * width;
      chart.append(svg('line', { x1: x, x2: x, y1: top - 2, y2: h - 14, class: 'grid' }),
        svg('text', { x, y: h - 2, class: 'axis', 'text-anchor': 'middle' }, pct(t)));
    }
    rows.forEach((p, i) => {
      const a = p.alpha, b = p.beta, n = a + b;
      const mean = a / n, sd = Math.sqrt((a * b) / (n * n * (n + 1)));
      const lo = Math.max(0, mean - 1.645 * sd), hi = Math.min(1, mean + 1.645 * sd);
      const y = top + i * rowH + rowH / 2;
      chart.append(
        svg('text', { x: left - 8, y: y + 4, class: 'name', 'text-anchor': 'end' }, p.model),
        svg('line', { x1: left + lo * width, x2: left + hi * width, y1: y, y2: y, class: 'interval' }),
        svg('circle', { cx: left + mean * width, cy: y, r: 4, class: 'mean' }),
        svg('text', { x: left + width + 8, y: y + 4, class: 'value' }, `${pct(mean)} · ${p.outcomes}`));
    });
    charts.push(el('figure', { class: 'posterior', data: { category } },
      el('figcaption', {}, category || 'default'), chart));
  }
  box.replaceChildren(...charts);
}

function renderRoutes(routes, providers) {
  const tbody = $('routes').tBodies[0];
  if (!routes.length) emptyRow(tbody, 3, 'no routes configured');
  else syncRows(tbody, routes, r => r.name, r => JSON.stringify(r),
    r => el('tr', { data: { route: r.name } },
      el('td', {}, el('code', {}, r.name)),
      el('td', {}, r.strategy),
      el('td', { class: 'layers' }, ...r.layers.map((layer, i) => el('span', { class: 'layer' },
        el('span', { class: 'muted' }, `${i + 1}. `), ...layer.map(m => el('span', { class: 'chip' }, m)))))));
  const pbody = $('providers').tBodies[0];
  syncRows(pbody, providers, p => p.name, p => JSON.stringify(p),
    p => el('tr', { data: { provider: p.name } },
      el('td', {}, el('code', {}, p.name)), el('td', {}, p.kind), el('td', {}, p.quota || '')));
}

function renderSpend(clients, quotas) {
  const tbody = $('clients').tBodies[0];
  if (!clients.length) emptyRow(tbody, 6, 'no client keys: the gateway is open (loopback) or uses none');
  else syncRows(tbody, clients, c => c.name, c => JSON.stringify(c),
    c => el('tr', { data: { client: c.name } },
      el('td', {}, c.name),
      el('td', {}, usd(c.spend_usd), c.reserved_usd > 0 ? el('span', { class: 'muted' }, ` (+${usd(c.reserved_usd)} in flight)`) : ''),
      el('td', {}, c.budget_usd ? usd(c.budget_usd) : 'none'),
      el('td', {}, c.budget_usd ? rateBar(Math.min(1, c.spend_usd / c.budget_usd)) : ''),
      // The minute's requests are counted for keys with an rpm limit only.
      el('td', {}, c.rpm ? meter(c.requests_last_minute, c.rpm) : el('span', { class: 'muted' }, 'no limit')),
      el('td', {}, c.routes.length ? c.routes.join(', ') : 'all')));
  const qbody = $('quotas').tBodies[0];
  if (!quotas.length) emptyRow(qbody, 5, 'no provider quotas configured');
  else syncRows(qbody, quotas, q => q.provider, q => JSON.stringify(q),
    q => el('tr', { data: { provider: q.provider } },
      el('td', {}, q.provider), el('td', {}, q.period),
      el('td', {}, el('span', { class: 'badge', data: { state: q.status } }, q.status)),
      el('td', {}, rateBar(q.used_ratio), el('span', { class: 'muted' }, ` of ${q.measure}`)),
      el('td', {}, q.resets_at)));
}

function renderOverview(o) {
  $('build').textContent = `v${o.version} (${o.commit}) · up ${ms(o.now_ms - o.started_ms)}`;
  $('redis').textContent = o.redis === 'off' ? '' : `redis ${o.redis}`;
  renderKeys(o.keys);
  renderBreakers(o.breakers, o.breaker_history);
  renderModels(o.models, o.posteriors);
  renderRoutes(o.routes, o.providers);
  renderSpend(o.clients, o.quotas);
}

// ---- workflow runs ---------------------------------------------------------------------------

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

function renderRuns(runs) {
  const tbody = $('runs').tBodies[0];
  const shown = runs.slice(0, 50);
  $('runs-note').textContent = runs.length > shown.length ? `the newest ${shown.length} of ${runs.length}` : '';
  if (!shown.length) return emptyRow(tbody, 8, 'no workflow runs');
  syncRows(tbody, shown, r => r.id, r => JSON.stringify([r, r.id === state.selectedRun]),
    r => el('tr', { data: { run: r.id, status: r.status }, class: r.id === state.selectedRun ? 'selected' : '' },
      el('td', {}, el('a', { href: '#', onclick: e => { e.preventDefault(); selectRun(r.id); } }, r.id)),
      el('td', {}, `${r.name} v${r.version}`),
      el('td', {}, r.client || 'local'),
      el('td', {}, el('span', { class: 'badge', data: { state: r.status } }, r.status),
        r.cancel_requested && !FINISHED.has(r.status) ? el('span', { class: 'muted' }, ' cancelling') : ''),
      el('td', {}, clock(r.created_ms)),
      el('td', {}, ms((r.finished_ms || state.overview.now_ms) - r.created_ms)),
      el('td', { class: 'error' }, r.error || ''),
      el('td', {}, FINISHED.has(r.status) || r.cancel_requested ? '' :
        el('button', { type: 'button', class: 'disable', onclick: () => cancelRun(r.id) }, 'Cancel'))));
}

async function selectRun(id) {
  state.selectedRun = id;
  await loadRunDetail();
  poll(true);
}

async function loadRunDetail() {
  if (!state.selectedRun) return;
  const r = await api(`/admin/runs/${encodeURIComponent(state.selectedRun)}`);
  if (r.status !== 200 || !r.body) return;
  const run = r.body;
  $('run-detail').hidden = false;
  $('run-title').textContent = `${run.id}: ${run.name} v${run.version}, ${run.status}${run.error ? ': ' + run.error : ''}`;
  const now = state.overview ? state.overview.now_ms : Date.now();
  const steps = run.steps || [];
  const start = Math.min(run.created_ms, ...steps.map(s => s.started_ms || run.created_ms));
  const end = Math.max(run.finished_ms || now, ...steps.map(s => s.finished_ms || now));
  const span = Math.max(1, end - start);
  const rowH = 18, left = 150, width = 480, h = steps.length * rowH + 22;
  const chart = svg('svg', { viewBox: `0 0 ${left + width + 70} ${h}`, class: 'chart timeline', role: 'img', 'aria-label': 'step timeline' });
  steps.forEach((s, i) => {
    const x0 = left + ((s.started_ms - start) / span) * width;
    const x1 = left + (((s.finished_ms || now) - start) / span) * width;
    const y = 4 + i * rowH;
    chart.append(svg('text', { x: left - 8, y: y + 11, class: 'name', 'text-anchor': 'end' }, s.id),
      svg('rect', { x: x0, y, width: Math.max(2, x1 - x0), height: rowH - 6, class: `bar ${s.status}` }),
      svg('text', { x: Math.min(x1 + 4, left + width + 4), y: y + 11, class: 'value' },
        s.finished_ms ? ms(s.finished_ms - s.started_ms) : s.status));
  });
  chart.append(svg('text', { x: left, y: h - 4, class: 'axis' }, clock(start)),
    svg('text', { x: left + width, y: h - 4, class: 'axis', 'text-anchor': 'end' }, `+${ms(span)}`));
  $('run-timeline').replaceChildren(chart);
  const tbody = $('run-steps').tBodies[0];
  tbody.replaceChildren(...steps.map(s => el('tr', { data: { step: s.id, status: s.status } },
    el('td', {}, el('code', {}, s.id)),
    el('td', {}, el('span', { class: 'badge', data: { state: s.status } }, s.status)),
    el('td', {}, String(s.attempt)),
    el('td', {}, s.duration_ms !== undefined ? ms(s.duration_ms) : ''),
    el('td', { class: 'error' }, s.error || ''))));
}

// ---- the loop --------------------------------------------------------------------------------

function showLogin(message) {
  clearTimeout(state.timer);
  $('console').hidden = true;
  $('login').hidden = false;
  $('forget-key').hidden = true;
  $('login-error').textContent = message || '';
  setStatus('locked', 'admin key needed');
  $('admin-key').focus();
}

let polling = false;
async function poll(now) {
  if (polling) return;
  polling = true;
  clearTimeout(state.timer);
  const started = performance.now();
  try {
    const r = await api('/admin/overview');
    if (r.status === 401) {
      const had = !!state.adminKey;
      state.adminKey = '';
      sessionStorage.removeItem(KEY_STORE);
      showLogin(had ? 'That key was refused.' : '');
      return;
    }
    if (r.status !== 200 || !r.body) throw new Error(errorText(r));
    state.overview = r.body;
    $('login').hidden = true;
    $('console').hidden = false;
    $('forget-key').hidden = !state.adminKey;
    renderOverview(r.body);
    if (r.body.workflows && (now || state.tick % RUNS_EVERY === 0)) {
      const runs = await api('/admin/runs');
      if (runs.status === 200 && runs.body) renderRuns(runs.body.data || []);
      if (state.selectedRun) await loadRunDetail();
    } else if (!r.body.workflows) {
      $('runs-note').textContent = 'workflows are not enabled on this gateway';
    }
    state.tick++;
    state.lastOk = Date.now();
    setStatus('live', 'live');
  } catch (e) {
    // A gateway out of reach is shown as such; anything else is this page's own bug.
    const network = e instanceof TypeError && /fetch/i.test(e.message);
    setStatus('error', network ? 'unreachable' : 'error');
    if (!network) console.error('console: ' + (e && e.stack || e));
  } finally {
    polling = false;
  }
  if (!$('login').hidden) return;
  // The next poll a second after this one started (never two at once).
  state.timer = setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', e => {
    e.preventDefault();
    state.adminKey = $('admin-key').value.trim();
    $('admin-key').value = '';
    sessionStorage.setItem(KEY_STORE, state.adminKey);
    $('login').hidden = true;
    poll(true);
  });
  $('forget-key').addEventListener('click', () => {
    state.adminKey = '';
    sessionStorage.removeItem(KEY_STORE);
    showLogin('');
  });
  setInterval(refreshCountdowns, 250);
  // A gateway with an admin key is asked for nothing before the user gave one.
  fetch('/ui/session', { cache: 'no-store' }).then(r => r.json()).then(s => {
    if (s.admin_key_required && !state.adminKey) showLogin('');
    else poll(true);
  }).catch(() => setStatus('error', 'unreachable'));
});
