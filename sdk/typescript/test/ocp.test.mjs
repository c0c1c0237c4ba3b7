// The OCP surface (storage.secrets, settings, kvStore, sharedKvStore) against a real server.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ConflictError, NumberSet, StringSet, createStorage } from '@tresor/sdk';

import { ALL_SCOPES, recorder, startServer } from './helpers/server.mjs';

let server;
let token;
let rec;
let storage;

before(async () => {
  server = await startServer();
  token = await server.install('ocp-app', ALL_SCOPES, 'acme', 'ocp-acme');
  rec = recorder();
  ({ storage } = createStorage({ url: server.url, token, fetch: rec.fetch }));
});

after(async () => {
  await server?.stop();
});

const raw = (p) => server.raw('GET', p, { token });

const STORES = [
  ['secrets', 'secrets'],
  ['settings', 'settings'],
  ['kvStore', 'kv'],
  ['sharedKvStore', 'shared'],
];

for (const [name, wire] of STORES) {
  describe(`storage.${name}`, () => {
    test('get of a missing key is {}; put returns the previous value; exists', async () => {
      const s = storage[name];
      assert.deepEqual(await s.get('authToken'), {});
      assert.equal(await s.exists('authToken'), false);
      assert.deepEqual(await s.put('authToken', { token: 'abc', siteId: 123 }), {});
      assert.deepEqual(await s.get('authToken'), { token: 'abc', siteId: 123 });
      assert.equal(await s.exists('authToken'), true);
      assert.deepEqual(await s.put('authToken', { token: 'def', siteId: 123 }), { token: 'abc', siteId: 123 });
      // The seed's read: `(await storage.secrets.get('authToken')).token`.
      assert.equal((await s.get('authToken')).token, 'def');
      const r = await raw(`/v1/${wire}/authToken`);
      assert.deepEqual(r.body.value, { token: 'def', siteId: 123 });
    });

    test('get with fields returns only those fields', async () => {
      const s = storage[name];
      await s.put('fields', { a: 1, b: 2, c: 3 });
      assert.deepEqual(await s.get('fields', ['a', 'c', 'zz']), { a: 1, c: 3 });
      assert.deepEqual(await s.get('fields', []), { a: 1, b: 2, c: 3 });
      assert.deepEqual(await s.get('missing-fields', ['a']), {});
    });

    test('put with a ttl sets an expiry; a put without removes it', async () => {
      const s = storage[name];
      await s.put('ttl', { x: 1 }, { ttl: 600 });
      const r = await raw(`/v1/${wire}/ttl`);
      assert.ok(r.body.expires_at, 'expires_at set');
      const left = Date.parse(r.body.expires_at) - Date.now();
      assert.ok(left > 590_000 && left <= 601_000, `${left} ms left`);
      await s.put('ttl', { x: 2 });
      assert.equal((await raw(`/v1/${wire}/ttl`)).body.expires_at, null);
    });

    test('patch with an object merges atomically and returns the previous value', async () => {
      const s = storage[name];
      // Missing key: patched from {}, previous is {}.
      assert.deepEqual(await s.patch('p', { token: 'abc', siteId: 123 }), {});
      // "update the token without changing the Site ID"
      assert.deepEqual(await s.patch('p', { token: 'def' }), { token: 'abc', siteId: 123 });
      assert.deepEqual(await s.get('p'), { token: 'def', siteId: 123 });
      // RFC 7396: null removes a field, nested objects merge.
      await s.put('p', { a: { x: 1, y: 2 }, b: 1 });
      await s.patch('p', { a: { y: null, z: 3 }, b: null });
      assert.deepEqual(await s.get('p'), { a: { x: 1, z: 3 } });
      // TTL: set by options.ttl, kept by a patch without it.
      await s.patch('p', { c: 1 }, { ttl: 300 });
      const e1 = (await raw(`/v1/${wire}/p`)).body.expires_at;
      assert.ok(e1);
      await s.patch('p', { d: 1 });
      assert.equal((await raw(`/v1/${wire}/p`)).body.expires_at, e1);
    });

    test('patch with an updater reads, computes and writes back; returns the previous value', async () => {
      const s = storage[name];
      const seen = [];
      const prev = await s.patch('token', (value, options) => {
        seen.push([structuredClone(value), options.ttl]);
        value.hour = 7;
        value.counter = 0;
        return value;
      });
      assert.deepEqual(prev, {});
      assert.deepEqual(seen, [[{}, undefined]]);
      // The seed's callback: a rate-limit window.
      const currentHour = 7;
      const apiCallCost = 5;
      const before = await s.patch('token', (value) => {
        if (value.hour !== currentHour) {
          value.hour = currentHour;
          value.counter = 0;
        } else {
          value.counter += apiCallCost;
        }
        return value;
      });
      assert.deepEqual(before, { hour: 7, counter: 0 });
      assert.deepEqual(await s.get('token'), { hour: 7, counter: 5 });
      // Returning nothing writes the mutated argument.
      await s.patch('token', (value) => {
        value.touched = true;
      });
      assert.equal((await s.get('token')).touched, true);
    });

    test('patch with an updater keeps the description and the remaining TTL, and can change the TTL', async () => {
      const s = storage[name];
      let r = await server.raw('PUT', `/v1/${wire}/described`, {
        token,
        body: { value: { n: 1 }, description: 'vendor API', ttl_seconds: 1000 },
      });
      assert.equal(r.status, 201);
      let ttlSeen;
      await s.patch('described', (v, options) => {
        ttlSeen = options.ttl;
        return { n: v.n + 1 };
      });
      assert.ok(ttlSeen > 990 && ttlSeen <= 1000, `ttl ${ttlSeen}`);
      r = await raw(`/v1/${wire}/described`);
      assert.deepEqual(r.body.value, { n: 2 });
      assert.equal(r.body.description, 'vendor API');
      const left = Date.parse(r.body.expires_at) - Date.now();
      assert.ok(left > 980_000 && left <= 1_001_000, `${left} ms left`);
      await s.patch('described', (v, options) => {
        options.ttl = 50;
        return v;
      });
      const left2 = Date.parse((await raw(`/v1/${wire}/described`)).body.expires_at) - Date.now();
      assert.ok(left2 > 40_000 && left2 <= 51_000, `${left2} ms left`);
    });

    test('20 concurrent patch updaters incrementing one field lose nothing', async () => {
      const s = storage[name];
      let calls = 0;
      const previous = await Promise.all(
        Array.from({ length: 20 }, () =>
          s.patch('counter', (v) => {
            calls++;
            v.count = (v.count ?? 0) + 1;
            return v;
          }),
        ),
      );
      assert.deepEqual(await s.get('counter'), { count: 20 });
      // Each updater saw a distinct previous value: 0..19.
      const counts = previous.map((p) => p.count ?? 0).sort((a, b) => a - b);
      assert.deepEqual(counts, Array.from({ length: 20 }, (_, i) => i));
      assert.ok(calls >= 20, `updaters ran ${calls} times (at least once each, more under contention)`);
    });

    test('20 concurrent partial patches of different fields all survive', async () => {
      const s = storage[name];
      await Promise.all(Array.from({ length: 20 }, (_, i) => s.patch('fields20', { [`f${i}`]: i })));
      const v = await s.get('fields20');
      assert.equal(Object.keys(v).length, 20);
      for (let i = 0; i < 20; i++) assert.equal(v[`f${i}`], i);
    });

    test('delete returns what was deleted; with fields only those', async () => {
      const s = storage[name];
      assert.deepEqual(await s.delete('never-there'), {});
      await s.put('d', { a: 1, b: 2, c: 3 });
      assert.deepEqual(await s.delete('d', ['a', 'b']), { a: 1, b: 2 });
      assert.deepEqual(await s.get('d'), { c: 3 });
      assert.deepEqual(await s.delete('d'), { c: 3 });
      assert.equal(await s.exists('d'), false);
      assert.deepEqual(await s.delete('d', ['c']), {});
    });

    test('keys are one path segment: slashes, percent signs, unicode', async () => {
      const s = storage[name];
      for (const key of ['a/b', '100%', 'ключ 🔑', '?#&=+', '.hidden', '...']) {
        await s.put(key, { key });
        assert.deepEqual(await s.get(key), { key });
        assert.equal(await s.exists(key), true);
      }
    });
  });
}

describe('storage.kvStore field operations', () => {
  const kv = () => storage.kvStore;

  /** Runs `fn` and asserts it made exactly one request, a POST to the field-ops endpoint. */
  async function oneOpsRequest(fn) {
    rec.reset();
    const out = await fn();
    assert.equal(rec.calls.length, 1, rec.calls.map((c) => `${c.method} ${c.url}`).join('\n'));
    assert.equal(rec.calls[0].method, 'POST');
    assert.match(rec.calls[0].url, /\/v1\/(kv|shared)\/[^/]+\/ops$/);
    return out;
  }

  test('increment and incrementMulti', async () => {
    assert.equal(await oneOpsRequest(() => kv().increment('stats', 'calls')), 1);
    assert.equal(await oneOpsRequest(() => kv().increment('stats', 'calls', 10)), 11);
    assert.equal(await oneOpsRequest(() => kv().increment('stats', 'calls', -3)), 8);
    assert.deepEqual(await oneOpsRequest(() => kv().incrementMulti('stats', { calls: 2, errors: 1, cost: 0.5 })), {
      calls: 10,
      errors: 1,
      cost: 0.5,
    });
    assert.deepEqual(await kv().get('stats'), { calls: 10, errors: 1, cost: 0.5 });
  });

  test('append, appendMulti, unshift, unshiftMulti, peek, peekMulti, shift, shiftMulti', async () => {
    await oneOpsRequest(() => kv().append('q', 'jobs', { id: 1 }));
    await oneOpsRequest(() => kv().appendMulti('q', { jobs: [{ id: 2 }, { id: 3 }], other: ['x', 'y'] }));
    await oneOpsRequest(() => kv().unshift('q', 'jobs', { id: 0 }));
    await oneOpsRequest(() => kv().unshiftMulti('q', { jobs: [{ id: -2 }, { id: -1 }], other: ['w'] }));
    assert.deepEqual(await kv().get('q'), {
      jobs: [{ id: -2 }, { id: -1 }, { id: 0 }, { id: 1 }, { id: 2 }, { id: 3 }],
      other: ['w', 'x', 'y'],
    });
    assert.deepEqual(await oneOpsRequest(() => kv().peek('q', 'jobs')), { id: -2 });
    assert.deepEqual(await oneOpsRequest(() => kv().peekMulti('q', { jobs: 2, other: 10, nothing: 3 })), {
      jobs: [{ id: -2 }, { id: -1 }],
      other: ['w', 'x', 'y'],
      nothing: [],
    });
    assert.deepEqual(await oneOpsRequest(() => kv().shift('q', 'jobs')), { id: -2 });
    assert.deepEqual(await oneOpsRequest(() => kv().shiftMulti('q', { jobs: 2, other: 5 })), {
      jobs: [{ id: -1 }, { id: 0 }],
      other: ['w', 'x', 'y'],
    });
    assert.deepEqual(await kv().get('q'), { jobs: [{ id: 1 }, { id: 2 }, { id: 3 }], other: [] });
    assert.equal(await kv().shift('q', 'other'), undefined);
    assert.equal(await kv().peek('q', 'nothing'), undefined);
  });

  test('shift and peek of a missing record answer empty and create nothing', async () => {
    assert.equal(await kv().shift('no-such-queue', 'jobs'), undefined);
    assert.deepEqual(await kv().shiftMulti('no-such-queue', { jobs: 3 }), { jobs: [] });
    assert.equal(await kv().peek('no-such-queue', 'jobs'), undefined);
    assert.deepEqual(await kv().peekMulti('no-such-queue', { jobs: 3 }), { jobs: [] });
    assert.equal(await kv().exists('no-such-queue'), false);
  });

  test('number and string sets', async () => {
    assert.equal(await oneOpsRequest(() => kv().addNumber('sets', 'ids', 5)), true);
    assert.equal(await kv().addNumber('sets', 'ids', 5), false);
    const added = await oneOpsRequest(() => kv().addNumberMulti('sets', { ids: [1, 5, 3], more: [7] }));
    assert.ok(added.ids instanceof NumberSet);
    assert.deepEqual([...added.ids].sort(), [1, 3]);
    assert.deepEqual([...added.more], [7]);
    assert.deepEqual((await kv().get('sets')).ids, [1, 3, 5]);
    assert.equal(await oneOpsRequest(() => kv().hasNumber('sets', 'ids', 3)), true);
    assert.equal(await kv().hasNumber('sets', 'ids', 4), false);
    const has = await oneOpsRequest(() => kv().hasNumberMulti('sets', { ids: [1, 2, 3], more: [7, 8] }));
    assert.deepEqual([...has.ids].sort(), [1, 3]);
    assert.deepEqual([...has.more], [7]);
    assert.equal(await oneOpsRequest(() => kv().removeNumber('sets', 'ids', 3)), true);
    assert.equal(await kv().removeNumber('sets', 'ids', 3), false);
    const removed = await oneOpsRequest(() => kv().removeNumberMulti('sets', { ids: [1, 2], more: [7] }));
    assert.deepEqual([...removed.ids], [1]);
    assert.deepEqual([...removed.more], [7]);
    assert.deepEqual(await kv().get('sets'), { ids: [5], more: [] });

    assert.equal(await oneOpsRequest(() => kv().addString('tags', 'names', 'b')), true);
    const s = await oneOpsRequest(() => kv().addStringMulti('tags', { names: ['a', 'b', 'c'] }));
    assert.ok(s.names instanceof StringSet);
    assert.deepEqual([...s.names].sort(), ['a', 'c']);
    assert.equal(await oneOpsRequest(() => kv().hasString('tags', 'names', 'c')), true);
    assert.deepEqual([...(await oneOpsRequest(() => kv().hasStringMulti('tags', { names: ['a', 'z'] }))).names], ['a']);
    assert.equal(await oneOpsRequest(() => kv().removeString('tags', 'names', 'a')), true);
    assert.deepEqual([...(await oneOpsRequest(() => kv().removeStringMulti('tags', { names: ['b', 'z'] }))).names], ['b']);
    assert.deepEqual(await kv().get('tags'), { names: ['c'] });
    // Set checks are reads: they do not create a missing record.
    assert.equal(await kv().hasString('no-tags', 'names', 'a'), false);
    assert.equal(await kv().exists('no-tags'), false);
    await assert.rejects(() => kv().addNumber('sets', 'ids', '5'), TypeError);
  });

  test('Set values are written as tresor sets', async () => {
    await kv().put('with-sets', { tags: new Set(['b', 'a', 'b']), nums: new Set([3, 1, 2]) });
    assert.deepEqual(await kv().get('with-sets'), { tags: ['a', 'b'], nums: [1, 2, 3] });
    assert.equal(await kv().addString('with-sets', 'tags', 'a'), false);
  });

  test('ops take a ttl', async () => {
    await kv().increment('ttl-counter', 'n', 1, { ttl: 120 });
    const r = await raw('/v1/kv/ttl-counter');
    assert.ok(r.body.expires_at);
  });

  test('an op that does not fit the stored value is a ConflictError and changes nothing', async () => {
    await kv().put('typed', { name: 'a string', n: 1 });
    rec.reset();
    const err = await kv()
      .incrementMulti('typed', { n: 1, name: 1 })
      .then(
        () => assert.fail('no error'),
        (e) => e,
      );
    assert.ok(err instanceof ConflictError, String(err));
    assert.equal(err.code, 'conflict');
    assert.equal(err.status, 409);
    assert.equal(err.requestId, JSON.parse(rec.calls[0].text).error.request_id);
    assert.deepEqual(await kv().get('typed'), { name: 'a string', n: 1 });
    await assert.rejects(() => kv().append('typed', 'name', 'x'), ConflictError);
    // get with fields of a value that is not an object.
    await kv().put('arr', [1]);
    await assert.rejects(() => kv().get('arr', ['a']), ConflictError);
  });
});

describe('storage.sharedKvStore', () => {
  test('is shared by the installations of one app, and only of that app', async () => {
    const other = await server.install('ocp-app', ALL_SCOPES, 'globex', 'ocp-globex');
    const stranger = await server.install('another-app', ALL_SCOPES, 'globex', 'another-globex');
    const { storage: otherStorage } = createStorage({ url: server.url, token: other });
    const { storage: strangerStorage } = createStorage({ url: server.url, token: stranger });
    // OCP's use: map an external account id to the installation that serves it.
    await storage.sharedKvStore.put('account:ext-77', { installation: 'ocp-acme' });
    assert.deepEqual(await otherStorage.sharedKvStore.get('account:ext-77'), { installation: 'ocp-acme' });
    assert.deepEqual(await strangerStorage.sharedKvStore.get('account:ext-77'), {});
    // The per-installation stores are not shared.
    await storage.kvStore.put('private', { mine: true });
    assert.deepEqual(await otherStorage.kvStore.get('private'), {});
    await otherStorage.sharedKvStore.increment('account:ext-77', 'hits');
    assert.deepEqual(await storage.sharedKvStore.get('account:ext-77'), { installation: 'ocp-acme', hits: 1 });
  });
});
