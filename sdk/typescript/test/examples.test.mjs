// Runs the example apps of ../../examples (compiled to dist-examples by `npm run build`) against
// tresor: each was written for its platform and only its import changed. They use the SDK's
// ready-made objects, so each gets its installation through TRESOR_ADDR and TRESOR_TOKEN, as a
// host would set them.

import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { configure, createStorage, sdk } from '@tresor/sdk';

import { ALL_SCOPES, startServer } from './helpers/server.mjs';
import { registerProviders, startUpstream } from './helpers/upstream.mjs';

let server;
let up;

before(async () => {
  [server, up] = await Promise.all([startServer(), startUpstream()]);
  await registerProviders(server, up);
  const r = await server.admin('PUT', '/v1/admin/providers/shopify-keys', {
    base_url: up.apiBase,
    allow_private_network: true,
    inject: { type: 'header', name: 'X-Api-Key' },
  });
  assert.equal(r.status, 201, r.text);
  process.env.TRESOR_ADDR = server.url;
});

after(async () => {
  configure({});
  await server?.stop();
  await up?.close();
});

/** Installs `app` in `account` and points the ready-made objects at that installation. */
async function runAs(app, scopes, account) {
  const token = await server.install(app, scopes, account, `${app}-${account}`);
  process.env.TRESOR_TOKEN = token;
  return createStorage({ url: server.url, token });
}

test('OCP: the vendor app', async () => {
  const app = await import('../dist-examples/ocp/app.js');
  const { storage } = await runAs('ocp-vendor', ['secrets:read', 'secrets:write', 'settings:read', 'settings:write', 'kv:read', 'kv:write', 'shared:read', 'shared:write'], 'acme');
  const vendor = new app.Vendor(`${up.base}/vendor/token`);
  await app.onSettingsSaved({ client_id: 'vendor-id', client_secret: 'vendor-secret' });

  const t1 = await app.callVendor(vendor, 5, 10);
  assert.match(t1, /^vendor_/);
  assert.equal(up.state.counts.vendorTokens, 1);
  assert.equal(await app.callVendor(vendor, 3, 10), t1, 'the token is cached in the secrets store');
  assert.equal(up.state.counts.vendorTokens, 1);
  assert.equal(await app.spent(), 8);
  await app.callVendor(vendor, 2, 11);
  assert.equal(await app.spent(), 2, 'a new hour starts a new window');
  // Concurrent job steps: the callback form of patch loses no cost.
  await Promise.all(Array.from({ length: 10 }, () => app.callVendor(vendor, 1, 12)));
  assert.equal(await app.spent(), 10);
  const fresh = await vendor.authenticate(await storage.settings.get('credentials'), true);
  assert.notEqual(fresh, t1);
  assert.equal(up.state.counts.vendorTokens, 2);
  assert.equal((await storage.secrets.get('utoken')).token, fresh);

  for (const id of ['e1', 'e2', 'e3']) await app.onWebhook({ id, type: id === 'e2' ? 'order' : 'refund' }, 'vendor-acct-1');
  assert.deepEqual(await app.drainWebhooks(2), [
    { id: 'e1', type: 'refund' },
    { id: 'e2', type: 'order' },
  ]);
  assert.deepEqual(await app.drainWebhooks(5), [{ id: 'e3', type: 'refund' }]);
  assert.deepEqual(await app.drainWebhooks(5), []);
  assert.deepEqual(await storage.kvStore.get('webhooks', ['received', 'types']), { received: 3, types: ['order', 'refund'] });
  assert.deepEqual(await storage.sharedKvStore.get('vendor-accounts'), { 'vendor-acct-1': 'this-installation' });

  assert.equal(await app.disconnect(), true);
  assert.equal(await storage.secrets.exists('utoken'), false);
  assert.deepEqual(await storage.settings.get('credentials'), { client_id: 'vendor-id' });
  await assert.rejects(() => app.callVendor(vendor, 1, 13), /bad vendor credentials/);
});

test('Forge: the webhook app', async () => {
  const app = await import('../dist-examples/forge/app.js');
  const { storage } = await runAs('forge-hooks', ['storage:app'], 'site-1');
  assert.deepEqual(await app.getStatus(), { configured: false });
  assert.deepEqual(await app.saveApiToken({ token: 'ATATT-123', siteUrl: 'https://acme.atlassian.net' }), { saved: true });
  assert.deepEqual(await app.getStatus(), { configured: true, siteUrl: 'https://acme.atlassian.net' });
  assert.deepEqual(await storage.secrets.get('api-token'), { token: 'ATATT-123', siteUrl: 'https://acme.atlassian.net' });

  const body = JSON.stringify({ issue: 'ACME-1' });
  const signed = (secret) => ({ body, headers: { 'x-signature': [createHmac('sha256', secret).update(body).digest('hex')] } });
  const s1 = await app.rotateWebhookSecret();
  assert.deepEqual(await app.webhook(signed(s1)), { statusCode: 204 });
  assert.deepEqual(await app.webhook(signed('forged')), { statusCode: 401 });
  const s2 = await app.rotateWebhookSecret();
  assert.deepEqual(await app.webhook(signed(s1)), { statusCode: 204 }, 'the previous secret still works');
  assert.deepEqual(await app.webhook(signed(s2)), { statusCode: 204 });
  await app.rotateWebhookSecret();
  assert.deepEqual(await app.webhook(signed(s1)), { statusCode: 401 });

  await app.disconnect();
  assert.deepEqual(await app.getStatus(), { configured: false });
  assert.deepEqual(await app.webhook(signed(s2)), { statusCode: 401 });
});

test('applet platform: the shop applet', async () => {
  const applet = await import('../dist-examples/rightplace/applet.js');
  await runAs('shop-applet', ['credentials:read', 'credentials:store', 'credentials:use'], 'site-7');
  // The host maps the applet's resource ids to its credential keys, and passes ctx.
  configure({ credentialKeyFor: (resourceId) => `shopify:${resourceId}` });
  const ctx = { sdk };

  const { redirectTo, flowId } = await applet.connectShop(ctx, 'store-7');
  const back = await up.consent(redirectTo);
  assert.match(back.location, /status=completed/);
  assert.deepEqual(await applet.finishConnect(ctx, flowId), { connected: true, scopes: ['read_products'] });
  assert.equal(await applet.shopName(ctx, 'store-7'), 'Demo shop');

  const apiKey = `shpat_${randomBytes(8).toString('hex')}`;
  up.acceptApiKey(apiKey);
  assert.equal(await applet.saveApiKey(ctx, 'store-8', apiKey), 'api_key for shopify-keys');
  assert.equal(await applet.shopName(ctx, 'store-8'), 'Demo shop');
  assert.deepEqual(await applet.connections(ctx), [
    { key: 'shopify:store-7', provider: 'shopify', needsReconsent: false },
    { key: 'shopify:store-8', provider: 'shopify-keys', needsReconsent: false },
  ]);
  // Credentials belong to the site: another applet of the site sees them (metadata only).
  const other = await server.install('other-applet', ['credentials:read'], 'site-7', 'other-applet-site-7');
  const seen = await createStorage({ url: server.url, token: other }).sdk.credentials.list();
  assert.deepEqual(
    seen.map((c) => [c.key, c.owner]),
    [
      ['shopify:store-7', 'account'],
      ['shopify:store-8', 'account'],
    ],
  );
  assert.deepEqual(up.state.violations, []);
});

test('workflow engine: the token-caching script', async () => {
  const engine = await import('../dist-examples/iris/engine.js');
  const script = await import('../dist-examples/iris/script.js');
  const t = await runAs('workflows', ['secrets:read', 'secrets:write'], 'tenant-1');

  await assert.rejects(() => script.fetchData(up.base), engine.ActionCancelled, 'no credentials configured yet');
  await script.configure('robot', 'hunter2');
  assert.deepEqual(await script.fetchData(up.base), { items: [1, 2, 3] });
  assert.equal(up.state.counts.logins, 1);
  const jwt = await t.GetSecret('ExternalApiJWT');
  assert.match(jwt, /^eyJ\./);

  engine.logs.length = 0;
  assert.deepEqual(await script.fetchData(up.base), { items: [1, 2, 3] });
  assert.equal(up.state.counts.logins, 1, 'the cached JWT was used');
  assert.ok(engine.logs.includes('Information: Using cached authentication token'), engine.logs.join('\n'));

  up.expireJwts();
  assert.deepEqual(await script.fetchData(up.base), { items: [1, 2, 3] });
  assert.equal(up.state.counts.logins, 2, 'a 401 re-authenticated');
  assert.notEqual(await t.GetSecret('ExternalApiJWT'), jwt);
  const meta = await server.raw('GET', '/v1/secrets/ExternalApiJWT', { token: process.env.TRESOR_TOKEN });
  assert.equal(meta.body.description, 'Cached authentication token');
});
