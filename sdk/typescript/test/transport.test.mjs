// Typed errors, request ids, the retry rule, configuration, and the ready-made objects that
// read TRESOR_ADDR and TRESOR_TOKEN.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import * as tresorSdk from '@tresor/sdk';
import {
  ConfigError,
  ForbiddenError,
  InvalidRequestError,
  NetworkError,
  NotFoundError,
  RateLimitedError,
  TresorError,
  UnauthenticatedError,
  UnavailableError,
  UnexpectedResponseError,
  createStorage,
} from '@tresor/sdk';

import { ALL_SCOPES, startServer } from './helpers/server.mjs';

let server;
let token;

before(async () => {
  server = await startServer();
  token = await server.install('errors-app', ALL_SCOPES, 'acct', 'errors-acct');
});

after(async () => {
  await server?.stop();
});

describe('typed errors', () => {
  test('carry the code, the status and the request id of the answer', async () => {
    const seen = [];
    const fetch = async (url, init) => {
      const res = await globalThis.fetch(url, init);
      seen.push({ sent: init.headers['x-request-id'], answered: res.headers.get('x-request-id') });
      return res;
    };
    const { storage, sdk } = createStorage({ url: server.url, token: 'tsr_bogus_token', fetch });
    const err = await storage.secrets.get('k').then(
      () => assert.fail('no error'),
      (e) => e,
    );
    assert.ok(err instanceof UnauthenticatedError && err instanceof TresorError && err instanceof Error);
    assert.equal(err.name, 'UnauthenticatedError');
    assert.equal(err.code, 'unauthenticated');
    assert.equal(err.status, 401);
    // The SDK sends an X-Request-Id; the server keeps it and the error carries it.
    assert.match(seen[0].sent, /^sdk-[a-z0-9]{20}$/);
    assert.equal(seen[0].answered, seen[0].sent);
    assert.equal(err.requestId, seen[0].sent);
    assert.ok(!err.message.includes('tsr_bogus_token'), 'no token in messages');
    // HEAD answers have no body: the code comes from the status.
    await assert.rejects(() => storage.secrets.exists('k'), (e) => e instanceof UnauthenticatedError && e.requestId !== undefined);
    await assert.rejects(() => sdk.credentials.list(), UnauthenticatedError);
  });

  test('scope refusals name the scope', async () => {
    const t = await server.token('errors-acct', ['kv:read']);
    const { storage } = createStorage({ url: server.url, token: t.token });
    await assert.rejects(
      () => storage.kvStore.put('k', { a: 1 }),
      (e) => e instanceof ForbiddenError && e.code === 'forbidden' && e.status === 403 && /kv:write/.test(e.message),
    );
  });

  test('keys a URL cannot carry are refused before sending', async () => {
    let sent = 0;
    const fetch = (url, init) => {
      sent++;
      return globalThis.fetch(url, init);
    };
    const { storage, kvs, sdk } = createStorage({ url: server.url, token, fetch });
    for (const key of ['', '.', '..']) {
      await assert.rejects(() => storage.secrets.get(key), (e) => e instanceof InvalidRequestError && e.status === 400 && e.requestId === undefined);
      await assert.rejects(() => kvs.setSecret(key, 1), InvalidRequestError);
      await assert.rejects(() => sdk.credentials.getMetadata(key), InvalidRequestError);
    }
    await assert.rejects(() => storage.secrets.get('k', ['a,b']), InvalidRequestError);
    assert.equal(sent, 0);
    // What the server refuses comes back typed too.
    await assert.rejects(() => storage.secrets.put('x'.repeat(501), { a: 1 }), (e) => e.code === 'payload_too_large' && e.status === 413);
    await assert.rejects(() => storage.secrets.put('ctl\u0001', { a: 1 }), (e) => e instanceof InvalidRequestError && typeof e.requestId === 'string');
    await assert.rejects(() => storage.secrets.put('ttl', { a: 1 }, { ttl: 0 }), InvalidRequestError);
  });

  test('every code of the contract has its class', async () => {
    const codes = {
      invalid_request: 'InvalidRequestError',
      unauthenticated: 'UnauthenticatedError',
      forbidden: 'ForbiddenError',
      quota_exceeded: 'QuotaExceededError',
      destination_forbidden: 'DestinationForbiddenError',
      not_found: 'NotFoundError',
      method_not_allowed: 'MethodNotAllowedError',
      conflict: 'ConflictError',
      reconsent_required: 'ReconsentRequiredError',
      gone: 'GoneError',
      precondition_failed: 'PreconditionFailedError',
      payload_too_large: 'PayloadTooLargeError',
      unsupported_media_type: 'UnsupportedMediaTypeError',
      rate_limited: 'RateLimitedError',
      internal: 'InternalError',
      upstream_failed: 'UpstreamFailedError',
      unavailable: 'UnavailableError',
      insufficient_storage: 'InsufficientStorageError',
    };
    for (const [code, cls] of Object.entries(codes)) {
      const fetch = async () =>
        new Response(JSON.stringify({ error: { code, message: `m ${code}`, request_id: 'r-1' } }), {
          status: 400,
          headers: { 'content-type': 'application/json', 'x-request-id': 'r-1' },
        });
      const { storage } = createStorage({ url: server.url, token, fetch, retries: 0 });
      const e = await storage.secrets.get('x').then(
        () => assert.fail('no error'),
        (err) => err,
      );
      assert.equal(e.constructor.name, cls, code);
      assert.equal(e.name, cls);
      assert.ok(e instanceof tresorSdk[cls]);
      assert.equal(e.code, code);
      assert.equal(e.message, `m ${code}`);
      assert.equal(e.requestId, 'r-1');
    }
  });
});

/**
 * A fetch that fails the first `failures` calls: `before` fails before anything is sent (a
 * refused connection), `after` sends and then loses the answer (the write took effect).
 */
function flaky(failures, mode = 'before') {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ method: init.method, url, id: init.headers['x-request-id'] });
    if (calls.length <= failures) {
      if (mode === 'after') await globalThis.fetch(url, init).then((r) => r.text());
      throw new TypeError('fetch failed', { cause: new Error('ECONNRESET') });
    }
    return globalThis.fetch(url, init);
  };
  return { fetch, calls };
}

describe('retries after a network failure', () => {
  test('reads and unconditional PUT/DELETE without a previous value are retried, with the same request id', async () => {
    const f = flaky(2);
    const t = createStorage({ url: server.url, token, fetch: f.fetch });
    await t.kvs.setSecret('retried', 'v');
    assert.equal(f.calls.length, 3);
    assert.equal(new Set(f.calls.map((c) => c.id)).size, 1);
    for (const call of [
      () => t.storage.secrets.get('retried'),
      () => t.storage.secrets.exists('retried'),
      () => t.kvs.getSecret('retried'),
      () => t.GetSecret('retried'),
      () => t.kvs.deleteSecret('retried-other'),
      () => t.storage.kvStore.peek('q', 'jobs'),
      () => t.storage.kvStore.hasString('s', 'f', 'a'),
      () => t.kvs.batch([{ op: 'get', key: 'retried' }]),
      () => t.sdk.credentials.list(),
      () => t.sdk.credentials.getMetadata('nope'),
      () => t.sdk.credentials.delete('nope'),
    ]) {
      f.calls.length = 0;
      await call();
      assert.equal(f.calls.length, 3, String(call));
    }
  });

  test('writes that are not safe to repeat are not retried, and say so', async () => {
    const cases = [
      ['OCP put (returns the previous value)', (t) => t.storage.secrets.put('w', { a: 1 })],
      ['OCP patch', (t) => t.storage.secrets.patch('w', { a: 2 })],
      ['OCP delete (returns what it deleted)', (t) => t.storage.secrets.delete('w')],
      ['increment', (t) => t.storage.kvStore.increment('c', 'n')],
      ['append', (t) => t.storage.kvStore.append('c', 'l', 1)],
      ['shift', (t) => t.storage.kvStore.shift('c', 'l')],
      ['conditional setSecret', (t) => t.kvs.setSecret('w2', 1, { keyPolicy: 'FAIL_IF_EXISTS' })],
      ['batch with a write', (t) => t.kvs.batch([{ op: 'set', key: 'w3', value: 1 }])],
      ['POST through the proxy', (t) => t.sdk.http.requestAuthed({ resourceId: 'r', method: 'POST', path: 'x' })],
      ['start an OAuth flow', (t) => t.sdk.oauth.startAuthCodeFlow({ provider: 'p', storeAs: { key: 'k' } })],
      ['complete an OAuth flow', (t) => t.sdk.oauth.completeAuthCodeFlow({ flowId: 'flw_x' })],
    ];
    for (const [name, call] of cases) {
      const f = flaky(1);
      const t = createStorage({ url: server.url, token, fetch: f.fetch });
      const err = await call(t).then(
        () => assert.fail(`${name}: no error`),
        (e) => e,
      );
      assert.ok(err instanceof NetworkError, `${name}: ${err}`);
      assert.equal(err.code, 'network_error');
      assert.equal(err.status, 0);
      assert.equal(err.requestId, f.calls[0].id);
      assert.match(err.message, /not retried/);
      assert.equal(f.calls.length, 1, name);
    }
  });

  test('why: a patch whose answer was lost did take effect', async () => {
    const { storage } = createStorage({ url: server.url, token });
    await storage.kvStore.put('lost', { n: 1 });
    const f = flaky(1, 'after');
    const t = createStorage({ url: server.url, token, fetch: f.fetch });
    await assert.rejects(() => t.storage.kvStore.increment('lost', 'n'), NetworkError);
    // Retrying would have counted twice.
    assert.deepEqual(await storage.kvStore.get('lost'), { n: 2 });
  });

  test('a GET through the proxy is retried; retries: 0 turns retries off; the last failure is thrown', async () => {
    let f = flaky(1);
    let t = createStorage({ url: server.url, token, fetch: f.fetch });
    await assert.rejects(() => t.sdk.http.requestAuthed({ resourceId: 'none', method: 'GET', path: 'x' }), NotFoundError);
    assert.equal(f.calls.length, 2);
    f = flaky(1);
    t = createStorage({ url: server.url, token, fetch: f.fetch, retries: 0 });
    await assert.rejects(() => t.storage.secrets.get('x'), NetworkError);
    assert.equal(f.calls.length, 1);
    f = flaky(10);
    t = createStorage({ url: server.url, token, fetch: f.fetch, retries: 3 });
    await assert.rejects(() => t.storage.secrets.get('x'), (e) => e instanceof NetworkError && /ECONNRESET/.test(e.message));
    assert.equal(f.calls.length, 4);
  });

  test('a timeout is a network failure', async () => {
    const hang = (_url, init) =>
      new Promise((_resolve, reject) => init.signal.addEventListener('abort', () => reject(init.signal.reason)));
    const t = createStorage({ url: server.url, token, fetch: hang, timeoutMs: 50, retries: 1 });
    const started = Date.now();
    await assert.rejects(() => t.storage.secrets.get('x'), NetworkError);
    assert.ok(Date.now() - started < 5000);
  });
});

describe('answers that say nothing was done', () => {
  /** A fetch that answers `status` with `body` for the first `n` calls, then passes through. */
  function answering(n, status, body, headers = {}) {
    const calls = [];
    const fetch = async (url, init) => {
      calls.push(init.method);
      if (calls.length <= n) {
        return new Response(body === undefined ? '' : JSON.stringify(body), {
          status,
          headers: { 'content-type': 'application/json', 'x-request-id': 'srv-1', ...headers },
        });
      }
      return globalThis.fetch(url, init);
    };
    return { fetch, calls };
  }
  const rateLimited = { error: { code: 'rate_limited', message: 'slow down', request_id: 'srv-1' } };
  const unavailable = { error: { code: 'unavailable', message: 'shutting down', request_id: 'srv-1' } };

  test('429 rate_limited and 503 unavailable are retried for any call, after Retry-After', async () => {
    let f = answering(1, 429, rateLimited, { 'retry-after': '0' });
    let t = createStorage({ url: server.url, token, fetch: f.fetch });
    assert.deepEqual(await t.storage.kvStore.patch('p429', { a: 1 }), {});
    assert.deepEqual(f.calls, ['PATCH', 'PATCH']);
    f = answering(2, 503, unavailable);
    t = createStorage({ url: server.url, token, fetch: f.fetch });
    assert.equal(await t.storage.kvStore.increment('p503', 'n'), 1);
    assert.equal(f.calls.length, 3);
  });

  test('a Retry-After over maxRetryDelayMs is thrown, with retryAfter', async () => {
    const f = answering(1, 429, rateLimited, { 'retry-after': '3600' });
    const t = createStorage({ url: server.url, token, fetch: f.fetch });
    const err = await t.storage.secrets.get('x').then(
      () => assert.fail('no error'),
      (e) => e,
    );
    assert.ok(err instanceof RateLimitedError);
    assert.equal(err.retryAfter, 3600);
    assert.equal(err.requestId, 'srv-1');
    assert.equal(f.calls.length, 1);
  });

  test('a 503 without the contract body (something in front of tresor) is not retried', async () => {
    const f = answering(1, 503, undefined);
    const t = createStorage({ url: server.url, token, fetch: f.fetch });
    await assert.rejects(() => t.storage.secrets.put('x', { a: 1 }), (e) => e instanceof UnavailableError && e.status === 503);
    assert.equal(f.calls.length, 1);
  });

  test('redirects and non-JSON answers are UnexpectedResponseError', async () => {
    let f = answering(1, 302, undefined, { location: 'https://elsewhere.example/' });
    let t = createStorage({ url: server.url, token, fetch: f.fetch });
    await assert.rejects(() => t.storage.secrets.get('x'), (e) => e instanceof UnexpectedResponseError && e.status === 302);
    const html = async () => new Response('<html>proxy</html>', { status: 200, headers: { 'content-type': 'text/html' } });
    t = createStorage({ url: server.url, token, fetch: html });
    await assert.rejects(() => t.storage.secrets.get('x'), UnexpectedResponseError);
    f = answering(1, 418, undefined);
    t = createStorage({ url: server.url, token, fetch: f.fetch });
    await assert.rejects(() => t.storage.secrets.get('x'), (e) => e instanceof UnexpectedResponseError && e.code === 'http_418');
  });
});

describe('configuration', () => {
  test('the ready-made objects read TRESOR_ADDR and TRESOR_TOKEN at each call; configure() overrides', async () => {
    const saved = { addr: process.env.TRESOR_ADDR, token: process.env.TRESOR_TOKEN };
    try {
      delete process.env.TRESOR_TOKEN;
      await assert.rejects(() => tresorSdk.storage.secrets.get('x'), (e) => e instanceof ConfigError && e.code === 'config_error');
      // The workflow functions still throw on a missing configuration: it is a programming error.
      await assert.rejects(() => tresorSdk.SetSecret('x', 'y'), ConfigError);
      process.env.TRESOR_ADDR = server.url;
      process.env.TRESOR_TOKEN = token;
      await tresorSdk.storage.secrets.put('from-env', { ok: true });
      assert.deepEqual(await tresorSdk.storage.secrets.get('from-env'), { ok: true });
      assert.deepEqual(await tresorSdk.kvs.getSecret('from-env'), { ok: true });
      assert.equal(await tresorSdk.SetSecret('from-env-2', 'v'), true);
      assert.equal(await tresorSdk.GetSecret('from-env-2'), 'v');
      assert.equal(await tresorSdk.DeleteSecret('from-env-2'), true);
      assert.deepEqual(await tresorSdk.sdk.credentials.list(), []);
      process.env.TRESOR_TOKEN = 'tsr_wrong';
      await assert.rejects(() => tresorSdk.storage.secrets.get('from-env'), UnauthenticatedError);
      tresorSdk.configure({ token });
      assert.deepEqual(await tresorSdk.storage.secrets.get('from-env'), { ok: true });
    } finally {
      tresorSdk.configure({});
      if (saved.addr === undefined) delete process.env.TRESOR_ADDR;
      else process.env.TRESOR_ADDR = saved.addr;
      if (saved.token === undefined) delete process.env.TRESOR_TOKEN;
      else process.env.TRESOR_TOKEN = saved.token;
    }
  });

  test('bad configurations are ConfigError at createStorage', () => {
    const saved = process.env.TRESOR_TOKEN;
    delete process.env.TRESOR_TOKEN;
    try {
      assert.throws(() => createStorage({ url: server.url }), ConfigError);
    } finally {
      if (saved !== undefined) process.env.TRESOR_TOKEN = saved;
    }
    assert.throws(() => createStorage({ url: 'not a url', token: 't' }), ConfigError);
    assert.throws(() => createStorage({ url: 'ftp://x', token: 't' }), ConfigError);
    assert.throws(() => createStorage({ url: 'http://h/?q=1', token: 't' }), ConfigError);
    assert.throws(() => createStorage({ url: server.url, token: 'a b' }), ConfigError);
    assert.throws(() => createStorage({ url: server.url, token: 't', retries: -1 }), ConfigError);
  });

  test('a base URL with a path prefix and a trailing slash', async () => {
    const seen = [];
    const fetch = (url, init) => {
      seen.push(url);
      return globalThis.fetch(url.replace('/prefix', ''), init);
    };
    const { storage } = createStorage({ url: `${server.url}/prefix/`, token, fetch });
    await storage.secrets.get('a/b');
    assert.equal(seen[0], `${server.url}/prefix/v1/secrets/a%2Fb`);
  });
});
