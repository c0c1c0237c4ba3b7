// The applet platform's surface: sdk.credentials, sdk.http.requestAuthed, sdk.oauth, against a
// real server and a fake provider; and the write-only guarantee: no SDK answer ever carries a
// stored credential secret.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import {
  ConflictError,
  ForbiddenError,
  GoneError,
  InvalidRequestError,
  NotFoundError,
  createStorage,
} from '@tresor/sdk';

import { ALL_SCOPES, recorder, startServer } from './helpers/server.mjs';
import { registerProviders, startUpstream } from './helpers/upstream.mjs';

const RETURN_TO = 'https://app.example.com/settings';

let server;
let up;
let token;
let rec;
let sdk;
/** Every value an SDK call returned, for the canary scan. */
const returned = [];

function keep(v) {
  returned.push(v);
  return v;
}

before(async () => {
  [server, up] = await Promise.all([startServer(), startUpstream()]);
  await registerProviders(server, up, RETURN_TO);
  token = await server.install('applet', ALL_SCOPES, 'site-9', 'applet-site-9');
  rec = recorder();
  ({ sdk } = createStorage({ url: server.url, token, fetch: rec.fetch, credentialKeyFor: (id) => `shopify:${id}` }));
});

after(async () => {
  await server?.stop();
  await up?.close();
});

describe('sdk.credentials', () => {
  test('store defaults to the account owner, returns metadata only; getMetadata, list, delete', async () => {
    const apiKey = `key-${randomBytes(8).toString('hex')}`;
    up.acceptApiKey(apiKey);
    const meta = keep(
      await sdk.credentials.store({
        key: 'vendor',
        provider: 'keyed',
        secret: { api_key: apiKey },
        metadata: { shop: 'demo' },
        source: 'websiteCredential', // the applet platform's; accepted and ignored
      }),
    );
    assert.equal(meta.key, 'vendor');
    assert.equal(meta.owner, 'account');
    assert.equal(meta.provider, 'keyed');
    assert.equal(meta.kind, 'api_key');
    assert.deepEqual(meta.metadata, { shop: 'demo' });
    assert.equal(meta.needsReconsent, false);
    assert.ok(meta.version > 0 && meta.createdAt && meta.updatedAt);
    assert.equal(meta.expiresAt, null);
    assert.deepEqual(Object.keys(meta).sort(), [
      'createdAt',
      'expiresAt',
      'key',
      'kind',
      'metadata',
      'needsReconsent',
      'owner',
      'provider',
      'scopes',
      'tokenExpiresAt',
      'updatedAt',
      'version',
    ]);

    const mine = keep(
      await sdk.credentials.store({
        key: 'mine',
        provider: 'basic',
        secret: { username: 'u', password: 'p' },
        owner: 'installation',
        ttlSeconds: 3600,
      }),
    );
    assert.equal(mine.owner, 'installation');
    assert.equal(mine.kind, 'basic');
    assert.ok(mine.expiresAt);

    assert.deepEqual(keep(await sdk.credentials.getMetadata('vendor')), meta);
    assert.equal(await sdk.credentials.getMetadata('no-such-credential'), undefined);
    const list = keep(await sdk.credentials.list());
    assert.deepEqual(
      list.map((c) => c.key),
      ['mine', 'vendor'],
    );
    assert.deepEqual(
      keep(await sdk.credentials.list({ prefix: 'v' })).map((c) => c.key),
      ['vendor'],
    );
    await sdk.credentials.delete('mine');
    await sdk.credentials.delete('mine');
    assert.equal(await sdk.credentials.getMetadata('mine'), undefined);
  });

  test('account credentials are shared by the apps of the account that may read them', async () => {
    const other = await server.install('other-applet', ['credentials:read'], 'site-9', 'other-site-9');
    const { sdk: otherSdk } = createStorage({ url: server.url, token: other });
    const seen = await otherSdk.credentials.getMetadata('vendor');
    assert.equal(seen?.owner, 'account');
    // Reading metadata is all `credentials:read` grants.
    await assert.rejects(
      () => otherSdk.credentials.store({ key: 'x', provider: 'keyed', secret: { api_key: 'k' } }),
      (e) => e instanceof ForbiddenError && e.status === 403 && /credentials:store/.test(e.message),
    );
  });

  test('a secret that cannot serve its provider, or an unknown provider, is an InvalidRequestError', async () => {
    await assert.rejects(() => sdk.credentials.store({ key: 'bad', provider: 'basic', secret: { api_key: 'k' } }), InvalidRequestError);
    await assert.rejects(() => sdk.credentials.store({ key: 'bad', provider: 'nope', secret: { api_key: 'k' } }), InvalidRequestError);
    await assert.rejects(() => sdk.credentials.store({ key: 'bad', provider: 'keyed', secret: { api_key: 'k' }, owner: 'site' }), TypeError);
  });
});

describe('sdk.http.requestAuthed', () => {
  let sdkIdentity;
  before(async () => {
    ({ sdk: sdkIdentity } = createStorage({ url: server.url, token }));
    const apiKey = `key-${randomBytes(8).toString('hex')}`;
    up.acceptApiKey(apiKey);
    await sdkIdentity.credentials.store({ key: 'api', provider: 'keyed', secret: { api_key: apiKey } });
    const access = `at-${randomBytes(8).toString('hex')}`;
    up.acceptAccessToken(access);
    await sdkIdentity.credentials.store({ key: 'shopify:store-1', provider: 'shopify', secret: { access_token: access } });
  });

  test('GET with query and headers; the credential is injected and redacted from the answer', async () => {
    const res = keep(
      await sdkIdentity.http.requestAuthed({
        resourceId: 'api',
        method: 'GET',
        path: 'echo',
        query: { q: 'a b', tags: ['x', 'y'] },
        headers: { 'X-Trace': 't-1' },
      }),
    );
    assert.equal(res.status, 200);
    assert.equal(res.ok, true);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.body.method, 'GET');
    assert.equal(res.body.path, '/api/v2/echo');
    assert.deepEqual(res.body.query, { q: 'a b', tags: 'y' });
    assert.equal(res.body.headers['x-trace'], 't-1');
    assert.equal(res.body.token, '[REDACTED]');
    assert.equal(res.body.headers['x-api-key'], '[REDACTED]');
  });

  test('resourceId goes through credentialKeyFor (the seed: `shopify:${resourceId}`)', async () => {
    const res = keep(await sdk.http.requestAuthed({ resourceId: 'store-1', method: 'GET', path: 'shop.json' }));
    assert.deepEqual(res.body, { shop: { id: 42, name: 'Demo shop' } });
    // Default method GET, and identity by default.
    const res2 = await sdkIdentity.http.requestAuthed({ resourceId: 'shopify:store-1', path: '/shop.json' });
    assert.equal(res2.status, 200);
  });

  test('bodies: JSON, text and bytes out; JSON, text and bytes back', async () => {
    let res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', method: 'POST', path: 'echo', body: { a: [1, 2] } }));
    assert.equal(res.body.method, 'POST');
    assert.deepEqual(JSON.parse(res.body.body), { a: [1, 2] });
    assert.equal(res.body.headers['content-type'], 'application/json');

    res = keep(
      await sdkIdentity.http.requestAuthed({
        resourceId: 'api',
        method: 'PUT',
        path: 'echo',
        body: 'a=1&b=2',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      }),
    );
    assert.equal(res.body.body, 'a=1&b=2');
    assert.equal(res.body.headers['content-type'], 'application/x-www-form-urlencoded');
    res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', method: 'PATCH', path: 'echo', body: 'plain' }));
    assert.equal(res.body.body, 'plain');
    assert.equal(res.body.headers['content-type'], 'text/plain;charset=UTF-8');

    const bytes = new Uint8Array([0, 1, 2, 254, 255]);
    res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', method: 'POST', path: 'echo', body: bytes }));
    assert.deepEqual(Buffer.from(res.body.body_base64, 'base64'), Buffer.from(bytes));

    res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'text' }));
    assert.equal(res.body, 'hello, text');
    res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'binary' }));
    assert.ok(res.body instanceof Uint8Array);
    assert.deepEqual([...res.body], [...Array(256).keys()]);
    res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', method: 'HEAD', path: 'text' }));
    assert.equal(res.status, 200);
    assert.equal(res.body, undefined);
  });

  test("the provider's 4xx and 5xx are answers, not exceptions", async () => {
    const res = keep(await sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'status', query: { code: '418' } }));
    assert.equal(res.status, 418);
    assert.equal(res.ok, false);
    assert.deepEqual(res.body, { error: 'status 418' });
  });

  test("tresor's refusals are typed errors", async () => {
    await assert.rejects(
      () => sdkIdentity.http.requestAuthed({ resourceId: 'nothing-stored', path: 'echo' }),
      (e) => e instanceof NotFoundError && e.code === 'not_found' && e.status === 404,
    );
    await assert.rejects(
      () => sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'echo', headers: { Authorization: 'Bearer mine' } }),
      InvalidRequestError,
    );
    await assert.rejects(
      () => sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'echo', headers: { 'x-api-key': 'mine' } }),
      InvalidRequestError,
    );
    await assert.rejects(() => sdkIdentity.http.requestAuthed({ resourceId: 'api', path: 'https://evil.example/' }), InvalidRequestError);
  });
});

describe('sdk.oauth', () => {
  test('authorization-code flow: start, consent, status, the access token exactly once, then requestAuthed', async () => {
    const flow = keep(
      await sdk.oauth.startAuthCodeFlow({
        provider: 'shopify',
        storeAs: { source: 'websiteCredential', key: 'shopify:store-2', provider: 'shopify' },
        scopes: ['read_products'],
        returnTo: `${RETURN_TO}/done`,
      }),
    );
    assert.match(flow.flowId, /\S/);
    assert.ok(flow.authorizeUrl.startsWith(up.authorizeUrl), flow.authorizeUrl);
    assert.ok(flow.expiresAt);
    assert.equal((await sdk.oauth.getAuthCodeFlow({ flowId: flow.flowId })).status, 'pending');
    await assert.rejects(() => sdk.oauth.completeAuthCodeFlow({ flowId: flow.flowId }), ConflictError);

    const back = await up.consent(flow.authorizeUrl);
    assert.equal(back.status, 302);
    assert.ok(back.location.startsWith(`${RETURN_TO}/done?`), back.location);
    assert.match(back.location, /status=completed/);
    assert.equal((await sdk.oauth.getAuthCodeFlow({ flowId: flow.flowId })).status, 'completed');

    const done = await sdk.oauth.completeAuthCodeFlow({ flowId: flow.flowId });
    assert.match(done.accessToken, /^at_/);
    assert.equal(done.credential.key, 'shopify:store-2');
    assert.equal(done.credential.owner, 'account');
    assert.equal(done.credential.kind, 'oauth2');
    assert.ok(done.credential.tokenExpiresAt);
    // Exactly once.
    await assert.rejects(() => sdk.oauth.completeAuthCodeFlow({ flowId: flow.flowId }), (e) => e instanceof GoneError && e.status === 410);

    // The bundle does not keep the token; requestAuthed uses the stored one.
    const res = keep(await sdk.http.requestAuthed({ resourceId: 'store-2', method: 'GET', path: 'shop.json' }));
    assert.equal(res.status, 200);
    const echo = keep(await sdk.http.requestAuthed({ resourceId: 'store-2', method: 'GET', path: 'echo' }));
    assert.equal(echo.body.token, '[REDACTED]');
    // After the one completion, the access token never comes back.
    const after = rec.calls.slice(rec.calls.findIndex((c) => c.url.endsWith('/complete') && c.status === 200) + 1);
    for (const c of after) assert.ok(!c.text.includes(done.accessToken), `${c.method} ${c.url} leaked the access token`);
    for (const v of [await sdk.credentials.getMetadata('shopify:store-2'), await sdk.credentials.list()]) {
      assert.ok(!JSON.stringify(v).includes(done.accessToken));
    }
    assert.deepEqual(up.state.violations, []);
  });

  test('a denied consent fails the flow with the provider error', async () => {
    const flow = await sdk.oauth.startAuthCodeFlow({ provider: 'shopify', storeAs: { key: 'shopify:denied' } });
    up.state.deny = true;
    try {
      await up.consent(flow.authorizeUrl);
    } finally {
      up.state.deny = false;
    }
    const status = await sdk.oauth.getAuthCodeFlow({ flowId: flow.flowId });
    assert.equal(status.status, 'failed');
    assert.equal(status.error, 'access_denied');
    await assert.rejects(() => sdk.oauth.completeAuthCodeFlow({ flowId: flow.flowId }), ConflictError);
    assert.equal(await sdk.credentials.getMetadata('shopify:denied'), undefined);
  });

  test('bad starts are refused', async () => {
    await assert.rejects(
      () => sdk.oauth.startAuthCodeFlow({ provider: 'shopify', storeAs: { key: 'k' }, returnTo: 'https://evil.example/' }),
      InvalidRequestError,
    );
    await assert.rejects(() => sdk.oauth.startAuthCodeFlow({ storeAs: { key: 'k' } }), TypeError);
    await assert.rejects(() => sdk.oauth.startAuthCodeFlow({ provider: 'a', storeAs: { key: 'k', provider: 'b' } }), TypeError);
    await assert.rejects(() => sdk.oauth.getAuthCodeFlow({ flowId: 'flw_nope' }), NotFoundError);
  });
});

describe('write-only guarantee', () => {
  test('no SDK call returns a stored credential secret', async () => {
    const canary = `canary-${randomBytes(16).toString('hex')}`;
    const password = `canary-pw-${randomBytes(16).toString('hex')}`;
    const access = `canary-at-${randomBytes(16).toString('hex')}`;
    up.acceptApiKey(canary);
    up.acceptBasic('robot', password);
    up.acceptAccessToken(access);
    const scan = createStorage({ url: server.url, token, fetch: rec.fetch });
    const s = scan.sdk;
    rec.reset();

    keep(await s.credentials.store({ key: 'canary-key', provider: 'keyed', secret: { api_key: canary } }));
    keep(await s.credentials.store({ key: 'canary-basic', provider: 'basic', secret: { username: 'robot', password } }));
    keep(await s.credentials.store({ key: 'canary-oauth', provider: 'oauth', secret: { access_token: access, refresh_token: `${access}-rt` } }));
    // Replacing returns metadata too.
    keep(await s.credentials.store({ key: 'canary-key', provider: 'keyed', secret: { api_key: canary }, metadata: { v: 2 } }));
    for (const key of ['canary-key', 'canary-basic', 'canary-oauth']) {
      keep(await s.credentials.getMetadata(key));
      for (const method of ['GET', 'POST', 'HEAD']) {
        const res = keep(await s.http.requestAuthed({ resourceId: key, method, path: 'echo', body: method === 'POST' ? { hi: 1 } : undefined }));
        assert.equal(res.status, 200, `${key} ${method}`);
      }
      keep(await s.http.requestAuthed({ resourceId: key, path: 'binary' }));
      keep(await s.http.requestAuthed({ resourceId: key, path: 'text' }));
      // Errors carry no secret either.
      const err = await s.http
        .requestAuthed({ resourceId: key, path: 'echo', headers: { Authorization: canary } })
        .then(
          () => assert.fail('no error'),
          (e) => e,
        );
      keep({ message: err.message, code: err.code });
    }
    keep(await s.credentials.list());
    keep(await scan.storage.secrets.get('canary-key'));
    keep(await scan.kvs.getSecret('canary-key'));
    keep(await scan.GetSecret('canary-key'));
    for (const key of ['canary-key', 'canary-basic', 'canary-oauth']) await s.credentials.delete(key);

    assert.ok(rec.calls.length > 20, `${rec.calls.length} answers scanned`);
    for (const secret of [canary, password, access]) {
      for (const c of rec.calls) {
        assert.ok(!c.text.includes(secret), `the answer to ${c.method} ${c.url} carries a credential secret`);
      }
      const all = JSON.stringify(returned, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('latin1') : v));
      assert.ok(!all.includes(secret), 'an SDK return value carries a credential secret');
    }
    // And the proxied answers really did carry it before redaction.
    assert.ok(rec.calls.some((c) => c.text.includes('[REDACTED]')));
  });
});
