// The workflow engine's surface: SetSecret, GetSecret, DeleteSecret.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ConfigError, UnauthenticatedError, createStorage } from '@tresor/sdk';

import { startServer } from './helpers/server.mjs';

let server;
let token;
let tresor;

before(async () => {
  server = await startServer();
  token = await server.install('workflows', ['secrets:read', 'secrets:write'], 'tenant', 'workflows-tenant');
  tresor = createStorage({ url: server.url, token });
});

after(async () => {
  await server?.stop();
});

const raw = (p) => server.raw('GET', p, { token });

test('SetSecret creates, then updates; GetSecret reads; DeleteSecret deletes', async () => {
  const { SetSecret, GetSecret, DeleteSecret } = tresor;
  assert.equal(await GetSecret('ApiKey'), null);
  assert.equal(await SetSecret('ApiKey', 'sk_live_abc123', 'Third-party API key'), true);
  assert.equal(await GetSecret('ApiKey'), 'sk_live_abc123');
  let r = await raw('/v1/secrets/ApiKey');
  assert.equal(r.body.description, 'Third-party API key');
  // "Update existing secret (description optional)": the value changes, the description stays.
  assert.equal(await SetSecret('ApiKey', 'sk_live_xyz789', null), true);
  assert.equal(await GetSecret('ApiKey'), 'sk_live_xyz789');
  r = await raw('/v1/secrets/ApiKey');
  assert.equal(r.body.description, 'Third-party API key');
  assert.equal(await SetSecret('ApiKey', 'sk_live_3'), true);
  assert.equal((await raw('/v1/secrets/ApiKey')).body.description, 'Third-party API key');
  // A description given replaces it.
  assert.equal(await SetSecret('ApiKey', 'sk_live_4', 'rotated'), true);
  assert.equal((await raw('/v1/secrets/ApiKey')).body.description, 'rotated');
  assert.equal(await DeleteSecret('ApiKey'), true);
  assert.equal(await GetSecret('ApiKey'), null);
  assert.equal(await DeleteSecret('ApiKey'), true, 'deleting a missing secret succeeds');
});

test('an update keeps the expiry', async () => {
  await server.raw('PUT', '/v1/secrets/TempToken', { token, body: { value: 'token123', ttl_seconds: 600 } });
  const expiry = (await raw('/v1/secrets/TempToken')).body.expires_at;
  assert.equal(await tresor.SetSecret('TempToken', 'token456'), true);
  let r = await raw('/v1/secrets/TempToken');
  assert.equal(r.body.value, 'token456');
  assert.ok(Math.abs(Date.parse(r.body.expires_at) - Date.parse(expiry)) < 2000, 'the expiry is kept');
  assert.equal(await tresor.SetSecret('TempToken', 'token789', 'Temporary access token'), true);
  r = await raw('/v1/secrets/TempToken');
  assert.equal(r.body.description, 'Temporary access token');
  assert.ok(Math.abs(Date.parse(r.body.expires_at) - Date.parse(expiry)) < 2000, 'the expiry is kept');
});

test('a token that may write but not read still sets secrets', async () => {
  const writeOnly = await server.token('workflows-tenant', ['secrets:write']);
  const wo = createStorage({ url: server.url, token: writeOnly.token });
  assert.equal(await wo.SetSecret('write-only', 'v1', 'described'), true);
  assert.equal(await wo.SetSecret('write-only', 'v2'), true);
  assert.equal(await tresor.GetSecret('write-only'), 'v2');
  assert.equal(await wo.DeleteSecret('write-only'), true);
  assert.equal(await tresor.GetSecret('write-only'), null);
});

test('a value another surface stored that is not a string comes back as JSON text', async () => {
  await tresor.storage.setSecret('structured', { token: 'abc', siteId: 123 });
  assert.equal(await tresor.GetSecret('structured'), '{"token":"abc","siteId":123}');
  await tresor.storage.setSecret('number', 42);
  assert.equal(await tresor.GetSecret('number'), '42');
});

test('concurrent SetSecret calls all succeed (last write wins)', async () => {
  const results = await Promise.all(Array.from({ length: 10 }, (_, i) => tresor.SetSecret('busy', `v${i}`)));
  assert.deepEqual(results, Array(10).fill(true));
  assert.match(await tresor.GetSecret('busy'), /^v\d$/);
});

test('failures: SetSecret and DeleteSecret answer false, GetSecret throws, bad arguments throw', async () => {
  const readOnly = await server.token('workflows-tenant', ['secrets:read']);
  const ro = createStorage({ url: server.url, token: readOnly.token });
  assert.equal(await ro.SetSecret('x', 'y'), false);
  assert.equal(await ro.SetSecret('x', 'y', 'with description'), false);
  assert.equal(await ro.DeleteSecret('x'), false);
  assert.equal(await ro.GetSecret('x'), null);

  const revoked = await server.token('workflows-tenant');
  const rv = createStorage({ url: server.url, token: revoked.token });
  assert.equal(await rv.SetSecret('x', 'y'), true);
  assert.equal((await server.admin('DELETE', `/v1/admin/tokens/${revoked.token_id}`)).status, 204);
  assert.equal(await rv.SetSecret('x', 'z'), false);
  await assert.rejects(() => rv.GetSecret('x'), UnauthenticatedError);

  // Unreachable: false, not an exception.
  const down = createStorage({ url: 'http://127.0.0.1:9', token, retries: 0 });
  assert.equal(await down.SetSecret('x', 'y', 'd'), false);
  assert.equal(await down.DeleteSecret('x'), false);

  await assert.rejects(() => tresor.SetSecret('x', { not: 'a string' }), TypeError);
  await assert.rejects(() => tresor.SetSecret(undefined, 'v'), TypeError);
  assert.throws(() => createStorage({ url: server.url, token: '' }), ConfigError);
});
