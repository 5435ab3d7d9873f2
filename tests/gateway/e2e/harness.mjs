// Shared by the SDK suites (e2e.mjs: openai; anthropic.mjs: @anthropic-ai/sdk): a
// `switchboard serve` child on an ephemeral port, its graceful stop, and the checks run in order
// with one line each.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// The suite's arguments: SWITCHBOARD_BINARY WORK_DIR (exits 2 with a usage line without them).
export function suiteArgs(script) {
  const [bin, work] = process.argv.slice(2);
  if (!bin || !work) {
    console.error(`usage: node ${script} SWITCHBOARD_BINARY WORK_DIR`);
    process.exit(2);
  }
  return { bin, work };
}

// A private directory with `yaml` as its config; `${STATE}` in it (escaped in a template
// literal) becomes the path of a state file in that directory.
export function writeConfig(work, yaml) {
  const dir = mkdtempSync(join(work, 'run-'));
  const configPath = join(dir, 'switchboard.yaml');
  writeFileSync(configPath, yaml.replaceAll('${STATE}', join(dir, 'state.db')));
  return { dir, configPath };
}

export function startServer(bin, configPath) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['serve', '--config', configPath, '--listen', '127.0.0.1:0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OPENAI_API_KEYS: '', SWITCHBOARD_KEYS: '' },
    });
    let output = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`switchboard serve did not report its port within 15 s:\n${output}`));
    }, 15000);
    const onData = (buf) => {
      output += buf.toString();
      const m = output.match(/listening on \S+ \(port (\d+)\)/);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), log: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`switchboard serve exited early with ${code}:\n${output}`));
    });
  });
}

export function stopServer(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const kill = setTimeout(() => child.kill('SIGKILL'), 10000);
    child.removeAllListeners('exit');
    child.on('exit', (code, signal) => {
      clearTimeout(kill);
      resolve(signal ? signal : code);
    });
    child.kill('SIGTERM');
  });
}

// Starts the gateway on `configPath`, runs each check with makeClient(port)'s client, stops the
// gateway (it must exit 0) and exits the process: 0 when every check passed.
export async function runChecks(bin, { dir, configPath }, checks, makeClient) {
  let server;
  let failed = 0;
  try {
    server = await startServer(bin, configPath);
    const client = makeClient(server.port);
    for (const { name, fn } of checks) {
      try {
        await fn(client, server.port);
        console.log(`ok   ${name}`);
      } catch (err) {
        failed++;
        console.log(`FAIL ${name}: ${err?.stack ?? err}`);
      }
    }
  } catch (err) {
    failed++;
    console.log(`FAIL setup: ${err?.stack ?? err}`);
  } finally {
    if (server) {
      const code = await stopServer(server.child);
      if (code !== 0) {
        failed++;
        console.log(`FAIL switchboard serve exited with ${code} after SIGTERM\n${server.log()}`);
      } else {
        console.log('ok   graceful shutdown');
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
  process.exit(failed ? 1 : 0);
}
