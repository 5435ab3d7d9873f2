// End-to-end: the official `openai` SDK against a running `switchboard serve` (in-process mock
// providers), non-stream and stream. Usage: node e2e.mjs SWITCHBOARD_BINARY WORK_DIR
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { runChecks, suiteArgs, writeConfig } from './harness.mjs';

const { bin, work } = suiteArgs('e2e.mjs');

const config = writeConfig(
  work,
  `listen: 127.0.0.1:0
state: { path: \${STATE} }
log: { level: info, access_log: false }
server: { threads: 2, shutdown_grace_ms: 2000 }
providers:
  local:
    kind: mock
models:
  big: { provider: local, upstream: mock-big, tier: flagship }
  small: { provider: local, upstream: mock-small, tier: speed }
routes:
  auto: { strategy: ordered, layers: [[big], [small]] }
`,
);

const checks = [];
function check(name, fn) {
  checks.push({ name, fn });
}

check('non-stream completion with headers', async (client) => {
  const { data, response } = await client.chat.completions
    .create({ model: 'auto', messages: [{ role: 'user', content: 'Say hello' }] })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.match(data.choices[0].message.content, /answer from mock-big/);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.ok(data.usage.total_tokens > 0);
  assert.equal(response.headers.get('x-switchboard-model'), 'big');
  assert.equal(response.headers.get('x-switchboard-provider'), 'local');
  assert.equal(response.headers.get('x-switchboard-key'), 'local#1');
  assert.equal(response.headers.get('x-switchboard-layer'), '0');
  assert.match(response.headers.get('x-switchboard-request-id') ?? '', /^sb-/);
});

check('stream without usage', async (client) => {
  const stream = await client.chat.completions.create({
    model: 'small',
    messages: [{ role: 'user', content: 'Stream please' }],
    stream: true,
  });
  let text = '';
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.usage ?? null, null, 'usage chunk sent to a client that did not ask');
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.equal(text, 'correct answer from mock-small more more more');
  assert.equal(finish, 'stop');
});

check('stream with include_usage', async (client) => {
  const stream = await client.chat.completions.create({
    model: 'auto',
    messages: [{ role: 'user', content: 'Stream with usage' }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) text += c.delta?.content ?? '';
    if (chunk.usage) usage = chunk.usage;
  }
  assert.match(text, /^correct answer from mock-big/);
  assert.ok(usage && usage.total_tokens > 0, 'no usage chunk');
});

check('unknown model is a NotFoundError', async (client) => {
  await assert.rejects(
    client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      assert.match(err.message, /nope/);
      return true;
    },
  );
});

check('bad request is a BadRequestError naming the field', async (client) => {
  await assert.rejects(
    client.chat.completions.create({ model: 'auto', messages: [] }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.message, /messages/);
      return true;
    },
  );
});

check('embeddings.create (base64, as the SDK asks)', async (client) => {
  const { data, response } = await client.embeddings
    .create({ model: 'small', input: ['first text', 'second text'] })
    .withResponse();
  assert.equal(data.data.length, 2);
  assert.equal(data.data[0].embedding.length, 8);
  assert.ok(data.data[0].embedding.every((x) => Math.abs(x) <= 0.5));
  assert.ok(data.usage.prompt_tokens > 0);
  assert.equal(response.headers.get('x-switchboard-model'), 'small');
  const floats = await client.embeddings.create({
    model: 'small',
    input: 'first text',
    encoding_format: 'float',
  });
  for (let i = 0; i < 8; i++)
    assert.ok(Math.abs(floats.data[0].embedding[i] - data.data[0].embedding[i]) < 1e-6);
});

check('models.list', async (client) => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  for (const want of ['auto', 'big', 'small']) assert.ok(ids.includes(want), `${want} not in ${ids}`);
});

check('models.retrieve', async (client) => {
  const route = await client.models.retrieve('auto');
  assert.equal(route.id, 'auto');
  assert.equal(route.owned_by, 'switchboard');
  const model = await client.models.retrieve('big');
  assert.equal(model.owned_by, 'local');
  await assert.rejects(client.models.retrieve('no-such-model'), (err) => {
    assert.equal(err.status, 404);
    return true;
  });
});

check('responses.create with a string (output_text)', async (client) => {
  const { data, response } = await client.responses
    .create({ model: 'auto', input: 'Say hello', instructions: 'Be brief' })
    .withResponse();
  assert.equal(data.object, 'response');
  assert.equal(data.status, 'completed');
  assert.match(data.output_text, /answer from mock-big/);
  assert.ok(data.usage.input_tokens > 0 && data.usage.output_tokens > 0);
  assert.equal(response.headers.get('x-switchboard-model'), 'big');
});

check('responses.create with items, then previous_response_id', async (client) => {
  const first = await client.responses.create({
    model: 'small',
    input: [
      { role: 'developer', content: 'You are terse.' },
      { role: 'user', content: [{ type: 'input_text', text: 'First question' }] },
    ],
  });
  assert.match(first.output_text, /mock-small/);
  const second = await client.responses.create({
    model: 'small',
    previous_response_id: first.id,
    input: [
      { type: 'function_call', call_id: 'call_1', name: 'lookup', arguments: '{"q":"x"}' },
      { type: 'function_call_output', call_id: 'call_1', output: '42' },
    ],
    tools: [{ type: 'function', name: 'lookup', parameters: { type: 'object' }, strict: false }],
  });
  assert.equal(second.previous_response_id, first.id);
  assert.equal(second.status, 'completed');
  await assert.rejects(
    client.responses.create({ model: 'small', previous_response_id: 'resp_unknown', input: 'x' }),
    (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.code, 'previous_response_not_found');
      return true;
    },
  );
});

check('responses.stream().finalResponse()', async (client) => {
  const stream = client.responses.stream({ model: 'small', input: 'Stream please' });
  let deltas = '';
  stream.on('response.output_text.delta', (e) => {
    deltas += e.delta;
  });
  const final = await stream.finalResponse();
  assert.equal(final.status, 'completed');
  // The stream's final response has no output_text convenience (the SDK adds it to create()'s
  // answers only): the text is in the output items, and equals the deltas.
  const text = final.output
    .filter((item) => item.type === 'message')
    .flatMap((item) => item.content)
    .filter((part) => part.type === 'output_text')
    .map((part) => part.text)
    .join('');
  assert.equal(text, deltas);
  assert.match(text, /mock-small/);
  assert.ok(final.usage.output_tokens > 0);
});

await runChecks(bin, config, checks, (port) =>
  new OpenAI({
    baseURL: `http://127.0.0.1:${port}/v1`,
    apiKey: 'not-needed-on-loopback',
    maxRetries: 0,
    timeout: 10000,
  }),
);
