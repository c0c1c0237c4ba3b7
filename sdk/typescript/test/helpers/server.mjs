// Starts the real tresor binary ($TRESOR_BIN) on a free loopback port over a throwaway data
// directory, with a random TRESOR_ADMIN_TOKEN, and talks to its admin API: the harness of the
// SDK's tests (as crates/tresor-test-support/src/server.rs is for the Rust tests).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Every store scope, credentials scopes included. */
export const ALL_SCOPES = [
  'secrets:read',
  'secrets:write',
  'settings:read',
  'settings:write',
  'kv:read',
  'kv:write',
  'shared:read',
  'shared:write',
  'credentials:read',
  'credentials:store',
  'credentials:use',
];

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function startServer({ args = [] } = {}) {
  const bin = process.env.TRESOR_BIN;
  if (!bin) {
    throw new Error(
      'TRESOR_BIN is not set: build the server (cargo build -p tresor) and run with TRESOR_BIN=target/debug/tresor',
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'tresor-ts-sdk-'));
  const logFile = path.join(dir, 'server.log');
  const adminToken = `ts-sdk-admin-${randomBytes(24).toString('hex')}`;
  const port = await freePort();
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('TRESOR_')) delete env[k];
  env.TRESOR_ADMIN_TOKEN = adminToken;
  env.TRESOR_LOG = env.TRESOR_LOG_TEST ?? 'warn';
  const log = openSync(logFile, 'a');
  const child = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(dir, 'data'), ...args], {
    env,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  running.add(child);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    running.delete(child);
  });
  const url = `http://127.0.0.1:${port}`;
  const readLog = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`tresor exited early (${JSON.stringify(exited)}); log:\n${readLog()}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tresor did not become ready in 30 s; log:\n${readLog()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  /** Any request; the answer's status, headers, parsed body and text. */
  async function raw(method, p, { token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      payload = JSON.stringify(body);
      h['content-type'] ??= method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
    }
    const res = await fetch(url + p, { method, headers: h, body: payload, redirect: 'manual' });
    const text = await res.text();
    let json;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, body: json, text };
  }

  async function admin(method, p, body) {
    return raw(method, p, { token: adminToken, body });
  }

  /** Registers an app with `scopes`, an account, installs, and returns the installation token. */
  async function install(app, scopes, account, installation) {
    let r = await admin('PUT', `/v1/admin/apps/${app}`, { scopes });
    if (r.status !== 200 && r.status !== 201) throw new Error(`put app: ${r.status} ${r.text}`);
    r = await admin('PUT', `/v1/admin/accounts/${account}`);
    if (r.status !== 200 && r.status !== 201) throw new Error(`put account: ${r.status} ${r.text}`);
    r = await admin('PUT', `/v1/admin/installations/${installation}`, { app_id: app, account_id: account });
    if (r.status !== 201) throw new Error(`install: ${r.status} ${r.text}`);
    return r.body.token;
  }

  /** Another token of an installation, e.g. with fewer scopes. */
  async function token(installation, scopes) {
    const r = await admin('POST', `/v1/admin/installations/${installation}/tokens`, scopes ? { scopes } : {});
    if (r.status !== 201) throw new Error(`token: ${r.status} ${r.text}`);
    return r.body;
  }

  async function stop() {
    if (exited) return;
    const done = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }

  return { url, adminToken, raw, admin, install, token, stop, log: readLog };
}

/**
 * A `fetch` for the SDK that records every request and the full text of every answer, so a
 * test can count requests and scan answers.
 */
export function recorder() {
  const calls = [];
  async function recordingFetch(url, init) {
    const res = await fetch(url, init);
    const text = await res.text();
    calls.push({ method: init.method, url, headers: init.headers, body: init.body, status: res.status, text });
    return { status: res.status, headers: res.headers, text: async () => text };
  }
  return {
    fetch: recordingFetch,
    calls,
    reset() {
      calls.length = 0;
    },
  };
}
