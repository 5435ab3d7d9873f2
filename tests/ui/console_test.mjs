// The web console in a real browser: Debian's chromium, headless, driven by playwright-core.
//
//   node tests/ui/console_test.mjs <switchboard binary> <output dir for screenshots>
//
// Starts two mock providers and a gateway with an admin key (private processes on ports the
// kernel picks), opens /ui, logs in, and checks that the page lists every key, provider, model,
// route and client of the configuration; that a key disabled through the admin API, a 429 storm
// and an opened breaker each show up within 3 s; that the page's buttons work (enable a key,
// cancel a workflow run); and that the page logged no console error and had no failed request.
// Screenshots of each stage go to the output directory. Exits 0 when every check passed.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const [binary, outDir] = process.argv.slice(2);
if (!binary || !outDir) {
  console.error('usage: console_test.mjs <switchboard binary> <screenshot dir>');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN_KEY = 'console-admin-secret-1234';
const TEAM_KEY = 'gw-console-team-secret';
const VISIBLE_MS = 3000;  // the bound: a change shows up within 3 s

fs.mkdirSync(outDir, { recursive: true });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-ui-'));
const children = [];
let failures = 0;

function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

// Starts `args` and resolves with the port its log line reports.
function start(name, args, portPattern) {
  return new Promise((resolve, reject) => {
    // SWITCHBOARD_UI_WRAP (e.g. "gdb -batch -ex run -ex bt --args") runs the gateway under a tool.
    const wrap = name === 'gateway' && process.env.SWITCHBOARD_UI_WRAP ? process.env.SWITCHBOARD_UI_WRAP.split(' ') : [];
    const child = wrap.length ? spawn(wrap[0], [...wrap.slice(1), binary, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(binary, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const log = fs.createWriteStream(path.join(outDir, `${name}.log`));
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${seen}`)), 15000);
    const onData = chunk => {
      log.write(chunk);
      seen += chunk.toString();
      const m = seen.match(portPattern);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', code => reject(new Error(`${name} exited with ${code}: ${seen}`)));
  });
}

async function post(url, body, headers) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(headers || {}) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

async function chat(base, model, n) {
  const statuses = [];
  for (let i = 0; i < n; i++) {
    const r = await post(`${base}/v1/chat/completions`,
      { model, messages: [{ role: 'user', content: `hello ${i}` }] },
      { authorization: `Bearer ${TEAM_KEY}` });
    statuses.push(r.status);
  }
  return statuses;
}

// How long until `predicate` holds in the page (polled every 50 ms), or -1 after `limit` ms.
async function timeUntil(page, predicate, arg, limit) {
  const t0 = Date.now();
  try {
    await page.waitForFunction(predicate, arg, { timeout: limit, polling: 50 });
    return Date.now() - t0;
  } catch (e) {
    return -1;
  }
}

async function main() {
  const alphaPort = await start('mock-alpha', ['mock-provider', '--listen', '127.0.0.1:0'], /listening on port (\d+)/);
  const betaPort = await start('mock-beta', ['mock-provider', '--listen', '127.0.0.1:0'], /listening on port (\d+)/);
  const config = `listen: 127.0.0.1:0
log: { level: info, access_log: false }
state: { path: ${dir}/switchboard.db }
auth:
  admin_key: ${ADMIN_KEY}
  gateway_keys:
    - { key: ${TEAM_KEY}, name: team-a, monthly_budget_usd: 5 }
    - { key: gw-console-ci-secret, name: ci-bot, routes: [fast], rpm: 60 }
providers:
  alpha:
    kind: openai
    base_url: http://127.0.0.1:${alphaPort}/v1
    keys: [sk-alpha-secret-1, sk-alpha-secret-2]
    limits: { max_concurrent: 4 }
  beta:
    kind: openai
    base_url: http://127.0.0.1:${betaPort}/v1
    keys: [sk-beta-secret-1]
models:
  alpha-large: { provider: alpha, tier: flagship, cost: { input_per_mtok: 5, output_per_mtok: 15 } }
  alpha-small: { provider: alpha, tier: speed, cost: { input_per_mtok: 0.2, output_per_mtok: 0.8 } }
  beta-mid: { provider: beta, tier: balanced, cost: { input_per_mtok: 1, output_per_mtok: 3 } }
routes:
  smart: { strategy: learned, layers: [[alpha-large, beta-mid], [alpha-small]] }
  fast: { strategy: cheapest, layers: [[alpha-small, beta-mid]] }
breaker: { window: 10, min_calls: 4, failure_rate: 0.5, open_ms: 60000 }
retry: { max_attempts: 2, budget_ms: 5000, wait_for_key_ms: 0 }
`;
  fs.writeFileSync(path.join(dir, 'switchboard.yaml'), config);
  const port = await start('gateway', ['serve', '--config', path.join(dir, 'switchboard.yaml')], /listening on [^ ]+ \(port (\d+)\)/);
  const base = `http://127.0.0.1:${port}`;

  // Some traffic first, so that models, posteriors and spend have something to show.
  check((await chat(base, 'smart', 6)).every(s => s === 200), 'traffic through route smart is answered');
  check((await chat(base, 'fast', 4)).every(s => s === 200), 'traffic through route fast is answered');

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1500, height: 1400 } });
  const consoleErrors = [], failedRequests = [], badResponses = [];
  page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', e => consoleErrors.push(String(e)));
  page.on('requestfailed', r => failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', r => { if (r.status() >= 400) badResponses.push(`${r.status()} ${r.url()}`); });

  try {
    // ---- the admin key, asked once and kept in the tab
    await page.goto(`${base}/ui`);
    await page.waitForSelector('#login:not([hidden])', { timeout: 5000 });
    check(true, 'a gateway with an admin key asks for it');
    await page.fill('#admin-key', ADMIN_KEY);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#console:not([hidden])', { timeout: 5000 });
    await page.waitForSelector('#keys tr[data-key]', { timeout: 5000 });
    check(await page.evaluate(() => sessionStorage.getItem('switchboard.adminKey')) === ADMIN_KEY,
      'the admin key is kept in session storage');

    // ---- everything configured is listed
    const listed = await page.evaluate(() => ({
      keys: [...document.querySelectorAll('#keys tr[data-key]')].map(r => r.dataset.key),
      providers: [...document.querySelectorAll('#providers tr[data-provider]')].map(r => r.dataset.provider),
      models: [...document.querySelectorAll('#models tr[data-model]')].map(r => r.dataset.model),
      routes: [...document.querySelectorAll('#routes tr[data-route]')].map(r => r.dataset.route),
      clients: [...document.querySelectorAll('#clients tr[data-client]')].map(r => r.dataset.client),
      layers: document.querySelector('#routes tr[data-route="smart"]')?.textContent || '',
      text: document.body.innerText,
    }));
    const same = (a, b) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
    check(same(listed.keys, ['alpha#1', 'alpha#2', 'beta#1']), `every key is listed (${listed.keys})`);
    check(same(listed.providers, ['alpha', 'beta']), `every provider is listed (${listed.providers})`);
    check(same(listed.models, ['alpha-large', 'alpha-small', 'beta-mid']), `every model is listed (${listed.models})`);
    check(same(listed.routes, ['smart', 'fast']), `every route is listed (${listed.routes})`);
    check(same(listed.clients, ['team-a', 'ci-bot']), `every client key is listed by name (${listed.clients})`);
    check(/alpha-large.*beta-mid.*alpha-small/.test(listed.layers), `a route shows its layers in order (${listed.layers})`);
    check(!/sk-alpha-secret|sk-beta-secret|gw-console/.test(listed.text), 'no secret appears on the page');
    check(await page.locator('#posteriors figure').count() > 0, 'the learned posteriors are charted');
    check(await page.locator('#contextual tr[data-model]').count() > 0,
      'the contextual models of requests without hints are listed with their strongest features');
    await page.screenshot({ path: path.join(outDir, 'console-overview.png'), fullPage: true });

    // ---- a key disabled through the admin API
    const admin = { authorization: `Bearer ${ADMIN_KEY}` };
    check((await post(`${base}/admin/keys/beta%231/disable`, '', admin)).status === 200, 'beta#1 disabled through the admin API');
    let t = await timeUntil(page, () => document.querySelector('#keys tr[data-key="beta#1"]')?.dataset.state === 'disabled', null, VISIBLE_MS);
    check(t >= 0, `the disabled key shows up within 3 s (${t} ms)`);
    // ... and enabled again with the page's own button
    await page.click('#keys tr[data-key="beta#1"] button');
    t = await timeUntil(page, () => document.querySelector('#keys tr[data-key="beta#1"]')?.dataset.state === 'healthy', null, VISIBLE_MS);
    check(t >= 0, `the Enable button brings the key back (${t} ms)`);

    // ---- a 429 storm on alpha: every key cools down for the time the provider asked
    check((await post(`http://127.0.0.1:${alphaPort}/mock/scenario`, 'script: [{ status: 429, times: 1000, retry_after_ms: 40000 }]\n')).status === 200, 'alpha answers 429 from now on');
    const storm = await chat(base, 'alpha-small', 6);
    check(storm.some(s => s === 429 || s >= 500), `the storm reaches the clients (${storm})`);
    t = await timeUntil(page, () => ['alpha#1', 'alpha#2'].every(id => {
      const row = document.querySelector(`#keys tr[data-key="${id}"]`);
      return row && (row.dataset.state === 'cooling' || row.querySelector('.model-cooldown')) &&
        /retry after/.test(row.textContent);
    }), null, VISIBLE_MS);
    check(t >= 0, `the 429 storm (cooling keys, reason and countdown) shows up within 3 s (${t} ms)`);
    const countdowns = await page.evaluate(() => [...document.querySelectorAll('#keys tr[data-key^="alpha"] .countdown')].map(c => c.textContent));
    check(countdowns.length >= 2 && countdowns.every(c => / s$/.test(c)), `cooling keys count down (${countdowns})`);
    await page.screenshot({ path: path.join(outDir, 'console-429-storm.png'), fullPage: true });

    // ---- beta fails every call: its breaker opens
    check((await post(`http://127.0.0.1:${betaPort}/mock/scenario`, 'error_rate: 1.0\nerror_status: 500\n')).status === 200, 'beta answers 500 from now on');
    const failing = await chat(base, 'beta-mid', 6);
    check(failing.every(s => s >= 500), `beta's failures reach the clients (${failing})`);
    t = await timeUntil(page, () => [...document.querySelectorAll('#breakers tr[data-target]')].some(r =>
      r.dataset.target.includes('beta') && r.dataset.state === 'open' && r.querySelector('.countdown')), null, VISIBLE_MS);
    check(t >= 0, `the opened breaker (with its half-open countdown) shows up within 3 s (${t} ms)`);
    t = await timeUntil(page, () => /beta.*closed.*open/s.test(document.querySelector('#breaker-history')?.textContent || ''), null, VISIBLE_MS);
    check(t >= 0, 'the transition is in the breaker history');
    await page.screenshot({ path: path.join(outDir, 'console-breaker-open.png'), fullPage: true });

    // ---- a workflow run: listed, its timeline shown, cancelled from the page
    const submitted = await post(`${base}/v1/workflows/runs`, {
      definition: 'name: nightly-review\nversion: 2\nsteps:\n  - { id: warm-up, kind: sleep, input: { duration_ms: 10 } }\n  - { id: long-wait, kind: sleep, input: { duration_ms: 600000 } }\n',
    }, { authorization: `Bearer ${TEAM_KEY}` });
    check(submitted.status === 201, `a workflow run is submitted (${submitted.status})`);
    const runId = JSON.parse(submitted.text).id;
    t = await timeUntil(page, id => document.querySelector(`#runs tr[data-run="${id}"]`)?.dataset.status === 'running', runId, 2 * VISIBLE_MS);
    check(t >= 0, `the run shows up as running (${t} ms)`);
    await page.click(`#runs tr[data-run="${runId}"] a`);
    t = await timeUntil(page, () => document.querySelectorAll('#run-steps tr[data-step]').length === 2 &&
      document.querySelector('#run-timeline svg rect.completed') !== null, null, VISIBLE_MS);
    check(t >= 0, 'the run\'s step timeline shows its finished and running steps');
    await page.screenshot({ path: path.join(outDir, 'console-workflow-run.png'), fullPage: true });
    await page.click(`#runs tr[data-run="${runId}"] button`);
    t = await timeUntil(page, id => document.querySelector(`#runs tr[data-run="${id}"]`)?.dataset.status === 'cancelled', runId, 2 * VISIBLE_MS);
    check(t >= 0, `the Cancel button cancels the run (${t} ms)`);

    // ---- spend against budget
    const spend = await page.evaluate(() => document.querySelector('#clients tr[data-client="team-a"]')?.textContent || '');
    check(/\$5\.00/.test(spend) && /\$0\.0\d{3}/.test(spend), `team-a's spend is shown against its $5 budget (${spend})`);

    // ---- the page's own health
    check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(' | ')})`);
    check(failedRequests.length === 0, `no failed requests (${failedRequests.join(' | ')})`);
    check(badResponses.length === 0, `no request of the page was refused (${badResponses.join(' | ')})`);
  } finally {
    if (consoleErrors.length) console.log('console errors:', consoleErrors);
    await page.screenshot({ path: path.join(outDir, 'console-final.png'), fullPage: true }).catch(() => {});
    await browser.close();
  }

  // ---- without an admin key the console is the loopback's alone; and a second tab of a locked
  // gateway with a wrong key is told so (and sees nothing)
  const browser2 = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  try {
    const page2 = await browser2.newPage();
    await page2.goto(`${base}/ui`);
    await page2.waitForSelector('#login:not([hidden])', { timeout: 5000 });
    await page2.fill('#admin-key', 'not-the-admin-key');
    await page2.click('#login button[type=submit]');
    const refused = await timeUntil(page2, () => /refused/.test(document.querySelector('#login-error')?.textContent || ''), null, VISIBLE_MS);
    check(refused >= 0, 'a wrong admin key is refused and the console stays hidden');
    check(await page2.locator('#keys tr[data-key]').count() === 0, 'nothing is shown without the key');
  } finally {
    await browser2.close();
  }
  const headers = (await fetch(`${base}/ui`)).headers;
  check(/frame-ancestors 'none'/.test(headers.get('content-security-policy') || ''), 'the page may not be framed');
  check((await fetch(`${base}/admin/overview`)).status === 401, '/admin/overview needs the admin key');
}

try {
  await main();
} catch (e) {
  console.error('FAIL', e.stack || e);
  failures++;
} finally {
  for (const c of children) c.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
process.exit(failures ? 1 : 0);
