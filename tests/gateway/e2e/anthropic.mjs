// End-to-end: the official `@anthropic-ai/sdk` against a running `switchboard serve`, as Claude
// Code uses it (ANTHROPIC_BASE_URL). Behind the gateway: a scripted OpenAI-format upstream (tool
// calls included, whole and streamed) and an Anthropic-format one, both served by this script.
// Usage: node anthropic.mjs SWITCHBOARD_BINARY WORK_DIR
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import Anthropic from '@anthropic-ai/sdk';
import { runChecks, suiteArgs, writeConfig } from './harness.mjs';

const { bin, work } = suiteArgs('anthropic.mjs');

const KEY = 'sk-gw-e2e-anthropic-0001';
const seen = { anthropicHeaders: null, openaiBodies: [] };

// The OpenAI-format upstream: a tool call when tools are offered and no result came back yet,
// else text saying how many messages it received.
function openaiAnswer(req) {
  const last = req.messages[req.messages.length - 1];
  if (req.tools?.length && last.role !== 'tool') {
    return { tool: { id: 'call_e2e_1', name: 'get_weather', args: '{"city":"Paris"}' } };
  }
  if (last.role === 'tool') return { text: `It is 18 degrees (tool said ${last.content}).` };
  return { text: `Hello from upstream; messages=${req.messages.length}.` };
}

function sendOpenAI(res, req) {
  const a = openaiAnswer(req);
  const usage = { prompt_tokens: 21, completion_tokens: 9, total_tokens: 30 };
  const base = { id: 'chatcmpl-e2e', created: 1, model: req.model };
  if (!req.stream) {
    const message = a.tool
      ? {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: a.tool.id, type: 'function', function: { name: a.tool.name, arguments: a.tool.args } },
          ],
        }
      : { role: 'assistant', content: a.text };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        ...base,
        object: 'chat.completion',
        choices: [{ index: 0, message, finish_reason: a.tool ? 'tool_calls' : 'stop' }],
        usage,
      }),
    );
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  const chunk = (delta, finish = null) =>
    `data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  let out = chunk({ role: 'assistant', content: '' });
  if (a.tool) {
    out += chunk({
      tool_calls: [{ index: 0, id: a.tool.id, type: 'function', function: { name: a.tool.name, arguments: '' } }],
    });
    // The arguments in pieces, split inside the JSON.
    for (const piece of ['{"ci', 'ty":"Pa', 'ris"}'])
      out += chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] });
    out += chunk({}, 'tool_calls');
  } else {
    for (const word of a.text.split(/(?= )/)) out += chunk({ content: word });
    out += chunk({}, 'stop');
  }
  if (req.stream_options?.include_usage)
    out += `data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [], usage })}\n\n`;
  out += 'data: [DONE]\n\n';
  res.end(out);
}

const upstream = createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    const parsed = JSON.parse(body);
    if (req.url === '/v1/chat/completions') {
      seen.openaiBodies.push(parsed);
      sendOpenAI(res, parsed);
    } else if (req.url === '/v1/messages') {
      seen.anthropicHeaders = req.headers;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          id: 'msg_upstream',
          type: 'message',
          role: 'assistant',
          model: parsed.model,
          content: [{ type: 'text', text: 'Hello from the Anthropic upstream.' }],
          stop_reason: 'end_turn',
          stop_sequence: null,
          usage: { input_tokens: 12, output_tokens: 7 },
        }),
      );
    } else {
      res.writeHead(404).end();
    }
  });
});
await new Promise((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const up = `http://127.0.0.1:${upstream.address().port}/v1`;

const config = writeConfig(
  work,
  `listen: 127.0.0.1:0
state: { path: \${STATE} }
log: { level: info, access_log: false }
server: { threads: 2, shutdown_grace_ms: 2000 }
auth: { gateway_keys: [{ key: ${KEY}, name: e2e }] }
providers:
  fake: { kind: openai, base_url: "${up}", keys: [sk-fake-upstream-1] }
  ant: { kind: anthropic, base_url: "${up}", keys: [sk-ant-upstream-1] }
models:
  gpt: { provider: fake, upstream: gpt-e2e, cost: { input_per_mtok: 1, output_per_mtok: 2 } }
  claude: { provider: ant, upstream: claude-e2e }
routes:
  auto: { strategy: ordered, layers: [[gpt]] }
`,
);

const weatherTool = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

const checks = [];
function check(name, fn) {
  checks.push({ name, fn });
}

check('messages.create with the headers', async (client) => {
  const { data, response } = await client.messages
    .create({ model: 'auto', max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] })
    .withResponse();
  assert.equal(data.type, 'message');
  assert.equal(data.role, 'assistant');
  assert.equal(data.content[0].type, 'text');
  assert.equal(data.content[0].text, 'Hello from upstream; messages=1.');
  assert.equal(data.stop_reason, 'end_turn');
  assert.deepEqual(data.usage.input_tokens, 21);
  assert.deepEqual(data.usage.output_tokens, 9);
  assert.equal(response.headers.get('x-switchboard-provider'), 'fake');
  assert.equal(response.headers.get('x-switchboard-model'), 'gpt');
});

check('messages.stream rebuilds the same message', async (client) => {
  const texts = [];
  const stream = client.messages
    .stream({ model: 'auto', max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] })
    .on('text', (t) => texts.push(t));
  const msg = await stream.finalMessage();
  assert.equal(msg.content.length, 1);
  assert.equal(msg.content[0].text, 'Hello from upstream; messages=1.');
  assert.ok(texts.length > 1, `one text event only: ${texts}`);
  assert.equal(texts.join(''), msg.content[0].text);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(msg.usage.output_tokens, 9);
});

check('multi-turn content blocks arrive as one conversation', async (client) => {
  const msg = await client.messages.create({
    model: 'auto',
    max_tokens: 100,
    system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }],
    messages: [
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is this?' },
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
        ],
      },
      { role: 'assistant', content: [{ type: 'text', text: 'A tiny PNG.' }] },
      { role: 'user', content: 'Thanks.' },
    ],
  });
  assert.equal(msg.content[0].text, 'Hello from upstream; messages=4.');  // system + 3
  const sent = seen.openaiBodies.at(-1);
  assert.equal(sent.messages[0].role, 'system');
  assert.equal(sent.messages[1].content[1].image_url.url, 'data:image/png;base64,iVBORw0KGgo=');
});

check('tool use round trip (whole, then streamed)', async (client) => {
  const ask = { role: 'user', content: 'Weather in Paris?' };
  const first = await client.messages.create({
    model: 'auto',
    max_tokens: 100,
    tools: [weatherTool],
    messages: [ask],
  });
  assert.equal(first.stop_reason, 'tool_use');
  const use = first.content.find((b) => b.type === 'tool_use');
  assert.ok(use, JSON.stringify(first.content));
  assert.equal(use.name, 'get_weather');
  assert.deepEqual(use.input, { city: 'Paris' });
  const second = await client.messages.create({
    model: 'auto',
    max_tokens: 100,
    tools: [weatherTool],
    messages: [
      ask,
      { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '18C' }] },
    ],
  });
  assert.equal(second.content[0].text, 'It is 18 degrees (tool said 18C).');
  const streamed = await client.messages
    .stream({ model: 'auto', max_tokens: 100, tools: [weatherTool], messages: [ask] })
    .finalMessage();
  const streamedUse = streamed.content.find((b) => b.type === 'tool_use');
  assert.ok(streamedUse, JSON.stringify(streamed.content));
  assert.deepEqual(streamedUse.input, { city: 'Paris' });
  assert.equal(streamed.stop_reason, 'tool_use');
});

check('countTokens', async (client) => {
  const r = await client.messages.countTokens({
    model: 'auto',
    messages: [{ role: 'user', content: 'x'.repeat(400) }],
  });
  assert.ok(r.input_tokens >= 100 && r.input_tokens <= 200, `input_tokens ${r.input_tokens}`);
});

check('typed errors: bad request, wrong key, unknown model', async (client, port) => {
  await assert.rejects(
    client.messages.create({ model: 'auto', messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.message, /max_tokens/);
      return true;
    },
  );
  const stranger = new Anthropic({ baseURL: `http://127.0.0.1:${port}`, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(
    stranger.messages.create({ model: 'auto', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
      return true;
    },
  );
  await assert.rejects(
    client.messages.create({ model: 'nope', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof Anthropic.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.message, /nope/);
      return true;
    },
  );
});

check('an Anthropic upstream gets the client version and answers through', async (client) => {
  const msg = await client.messages.create({
    model: 'claude',
    max_tokens: 50,
    messages: [{ role: 'user', content: 'Hi' }],
  });
  assert.equal(msg.content[0].text, 'Hello from the Anthropic upstream.');
  assert.equal(msg.usage.output_tokens, 7);
  assert.equal(seen.anthropicHeaders['x-api-key'], 'sk-ant-upstream-1');
  assert.ok(seen.anthropicHeaders['anthropic-version'], 'no anthropic-version upstream');
});

await runChecks(bin, config, checks, (port) => {
  const client = new Anthropic({ baseURL: `http://127.0.0.1:${port}`, apiKey: KEY, maxRetries: 0, timeout: 10000 });
  // The scripted upstream stops with the gateway.
  process.on('exit', () => upstream.close());
  return client;
});
