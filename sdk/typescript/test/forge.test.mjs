// The Forge surface: storage.setSecret / getSecret / deleteSecret, the same on kvs, tresor's
// options, and kvs.batch over the atomic batch.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { InvalidRequestError, PreconditionFailedError, createStorage } from '@tresor/sdk';

import { startServer } from './helpers/server.mjs';

let server;
let token;
let tresor;

before(async () => {
  server = await startServer();
  // Forge's scope `storage:app` (secrets, settings and kv).
  token = await server.install('forge-app', ['storage:app'], 'site-1', 'forge-site-1');
  tresor = createStorage({ url: server.url, token });
});

after(async () => {
  await server?.stop();
});

const raw = (p) => server.raw('GET', p, { token });

for (const surface of ['storage', 'kvs']) {
  describe(`${surface}.setSecret / getSecret / deleteSecret`, () => {
    test('every value type of the seed round-trips', async () => {
      const s = tresor[surface];
      const key = `${surface}-example-key`;
      for (const value of [['Hello', 'World'], true, false, 123, 0, -1.5, { hello: 'world' }, 'Hello world', { nested: [1, { a: null }] }]) {
        assert.equal(await s.setSecret(key, value), undefined);
        assert.deepEqual(await s.getSecret(key), value);
      }
      // Integers stay integers.
      await s.setSecret(key, 12345678901234);
      assert.equal(await s.getSecret(key), 12345678901234);
    });

    test('getSecret of a missing key is undefined; deleteSecret succeeds whether or not the key exists', async () => {
      const s = tresor[surface];
      assert.equal(await s.getSecret(`${surface}-missing`), undefined);
      assert.equal(await s.deleteSecret(`${surface}-missing`), undefined);
      await s.setSecret(`${surface}-gone`, 'x');
      await s.deleteSecret(`${surface}-gone`);
      assert.equal(await s.getSecret(`${surface}-gone`), undefined);
    });

    test('last write wins', async () => {
      const s = tresor[surface];
      await Promise.all(Array.from({ length: 10 }, (_, i) => s.setSecret(`${surface}-lww`, i)));
      const v = await s.getSecret(`${surface}-lww`);
      assert.ok(Number.isInteger(v) && v >= 0 && v < 10);
    });

    test('tresor options: ttlSeconds and keyPolicy FAIL_IF_EXISTS', async () => {
      const s = tresor[surface];
      await s.setSecret(`${surface}-ttl`, 'v', { ttlSeconds: 3600 });
      const r = await raw(`/v1/secrets/${surface}-ttl`);
      const left = Date.parse(r.body.expires_at) - Date.now();
      assert.ok(left > 3_590_000 && left <= 3_601_000, `${left}`);
      await s.setSecret(`${surface}-ttl`, 'v2');
      assert.equal((await raw(`/v1/secrets/${surface}-ttl`)).body.expires_at, null);

      await s.setSecret(`${surface}-once`, 'first', { keyPolicy: 'FAIL_IF_EXISTS' });
      const err = await s.setSecret(`${surface}-once`, 'second', { keyPolicy: 'FAIL_IF_EXISTS' }).then(
        () => assert.fail('no error'),
        (e) => e,
      );
      assert.ok(err instanceof PreconditionFailedError, String(err));
      assert.equal(err.status, 412);
      assert.equal(err.code, 'precondition_failed');
      assert.match(err.requestId, /^[A-Za-z0-9._-]{1,64}$/);
      assert.equal(await s.getSecret(`${surface}-once`), 'first');
      await assert.rejects(() => s.setSecret(`${surface}-once`, 'x', { keyPolicy: 'OVERWRITE' }), TypeError);
    });

    test('null is not a storable value', async () => {
      await assert.rejects(() => tresor[surface].setSecret(`${surface}-null`, null), InvalidRequestError);
    });
  });
}

test('storage, kvs and OCP storage.secrets see the same secrets store', async () => {
  await tresor.storage.setSecret('shared-secret', { token: 't' });
  assert.deepEqual(await tresor.kvs.getSecret('shared-secret'), { token: 't' });
  assert.deepEqual(await tresor.storage.secrets.get('shared-secret'), { token: 't' });
  await tresor.kvs.deleteSecret('shared-secret');
  assert.equal(await tresor.storage.getSecret('shared-secret'), undefined);
});

describe('kvs.batch', () => {
  test('ops apply in order, each seeing the earlier writes', async () => {
    const results = await tresor.kvs.batch([
      { op: 'set', key: 'b1', value: { n: 1 } },
      { op: 'get', key: 'b1' },
      { op: 'patch', key: 'b1', value: { m: 2 } },
      { op: 'exists', key: 'b1' },
      { op: 'set', key: 'b1', value: 'replaced', description: 'desc', ttlSeconds: 60 },
      { op: 'get', key: 'b1' },
      { op: 'get', key: 'b-missing' },
      { op: 'exists', key: 'b-missing' },
      { op: 'set', key: 'cfg', value: { theme: 'dark' }, store: 'settings' },
      { op: 'delete', key: 'b2' },
    ]);
    assert.deepEqual(
      results.map((r) => r.status),
      [201, 200, 200, 200, 200, 200, 404, 404, 201, 204],
    );
    assert.deepEqual(results[1].value, { n: 1 });
    assert.deepEqual(results[2].value, { n: 1, m: 2 });
    assert.equal(results[3].exists, true);
    assert.equal(results[5].value, 'replaced');
    assert.equal(results[6].value, undefined);
    assert.equal(results[7].exists, false);
    assert.ok(results[4].version > results[0].version);
    assert.equal(await tresor.kvs.getSecret('b1'), 'replaced');
    assert.deepEqual(await tresor.storage.settings.get('cfg'), { theme: 'dark' });
    const r = await raw('/v1/secrets/b1');
    assert.equal(r.body.description, 'desc');
    assert.ok(r.body.expires_at);
  });

  test('is atomic: a failing write writes nothing and names its op', async () => {
    await tresor.kvs.setSecret('exists-already', 'old');
    const err = await tresor.kvs
      .batch([
        { op: 'set', key: 'atomic-a', value: 1 },
        { op: 'delete', key: 'b1' },
        { op: 'set', key: 'exists-already', value: 'new', keyPolicy: 'FAIL_IF_EXISTS' },
      ])
      .then(
        () => assert.fail('no error'),
        (e) => e,
      );
    assert.ok(err instanceof PreconditionFailedError, String(err));
    assert.equal(err.opIndex, 2);
    assert.equal(err.status, 412);
    assert.equal(await tresor.kvs.getSecret('atomic-a'), undefined);
    assert.equal(await tresor.kvs.getSecret('b1'), 'replaced');
    assert.equal(await tresor.kvs.getSecret('exists-already'), 'old');
  });

  test('ifVersion makes a write conditional', async () => {
    const [set] = await tresor.kvs.batch([{ op: 'set', key: 'versioned', value: 1 }]);
    await tresor.kvs.batch([{ op: 'set', key: 'versioned', value: 2, ifVersion: set.version }]);
    await assert.rejects(
      () => tresor.kvs.batch([{ op: 'set', key: 'versioned', value: 3, ifVersion: set.version }]),
      (e) => e instanceof PreconditionFailedError && e.opIndex === 0,
    );
    assert.equal(await tresor.kvs.getSecret('versioned'), 2);
  });

  test('bad ops are refused', async () => {
    await assert.rejects(() => tresor.kvs.batch([]), InvalidRequestError);
    await assert.rejects(() => tresor.kvs.batch([{ op: 'frobnicate', key: 'x' }]), TypeError);
    await assert.rejects(() => tresor.kvs.batch([{ op: 'get', key: '' }]), InvalidRequestError);
  });
});
