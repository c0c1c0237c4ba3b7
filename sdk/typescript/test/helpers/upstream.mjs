// A fake third-party world on 127.0.0.1, over plain http (so the tresor providers that point at
// it need "allow_private_network": true):
//
// - an OAuth 2.0 provider: /oauth/authorize (consents at once, or denies), /oauth/token
//   (authorization_code with PKCE S256 and client_secret_basic, refresh_token);
// - the provider's API under /api/v2/, which tresor's proxy calls with the injected credential:
//   `echo` reflects the request and the credential it saw, `shop.json`, `text`, `binary`,
//   `status?code=N`;
// - a vendor token endpoint for the OCP example (/vendor/token) and a login-protected API for
//   the workflow-engine example (/auth/login, /api/data).
//
// Client mistakes are recorded in `violations`, which tests expect empty.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';

export const CLIENT_ID = 'ts-sdk-client';
export const CLIENT_SECRET = 'ts-sdk-client-secret';

const rand = (prefix) => `${prefix}${randomBytes(16).toString('hex')}`;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function json(res, status, doc, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(doc));
}

export async function startUpstream() {
  const state = {
    codes: new Map(), // code -> { redirectUri, challenge, scope }
    accessTokens: new Set(),
    refreshTokens: new Set(),
    apiKeys: new Set(),
    basic: new Set(), // "user:password"
    deny: false,
    counts: { codeExchanges: 0, refreshes: 0, apiCalls: 0, vendorTokens: 0, logins: 0, dataCalls: 0 },
    violations: [],
    jwts: new Set(),
  };

  function credentialOf(req, url) {
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Bearer ') && state.accessTokens.has(auth.slice(7))) return auth.slice(7);
    if (auth.startsWith('Basic ')) {
      const pair = Buffer.from(auth.slice(6), 'base64').toString('utf8');
      if (state.basic.has(pair)) return pair.slice(pair.indexOf(':') + 1);
    }
    const key = req.headers['x-api-key'];
    if (typeof key === 'string' && state.apiKeys.has(key.replace(/^Token /, ''))) return key.replace(/^Token /, '');
    const q = url.searchParams.get('api_key');
    if (q && state.apiKeys.has(q)) return q;
    return undefined;
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://upstream');
    const body = await readBody(req);
    const p = url.pathname;

    if (p === '/oauth/authorize' && req.method === 'GET') {
      const q = url.searchParams;
      const redirectUri = q.get('redirect_uri');
      if (q.get('client_id') !== CLIENT_ID || !redirectUri) {
        state.violations.push(`authorize: bad client_id or redirect_uri: ${url.search}`);
        return json(res, 400, { error: 'invalid_request' });
      }
      const back = new URL(redirectUri);
      back.searchParams.set('state', q.get('state') ?? '');
      if (q.get('response_type') !== 'code' || q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) {
        state.violations.push(`authorize: no PKCE S256 or not a code request: ${url.search}`);
        back.searchParams.set('error', 'invalid_request');
      } else if (state.deny) {
        back.searchParams.set('error', 'access_denied');
      } else {
        const code = rand('code_');
        state.codes.set(code, { redirectUri, challenge: q.get('code_challenge'), scope: q.get('scope') ?? '' });
        back.searchParams.set('code', code);
      }
      res.writeHead(302, { location: back.href });
      return res.end();
    }

    if (p === '/oauth/token' && req.method === 'POST') {
      const form = new URLSearchParams(body.toString('utf8'));
      const auth = req.headers.authorization ?? '';
      const expected = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;
      if (auth !== expected) {
        state.violations.push('token: bad client authentication');
        return json(res, 401, { error: 'invalid_client' });
      }
      const issue = (scope) => {
        const access = rand('at_');
        const refresh = rand('rt_');
        state.accessTokens.add(access);
        state.refreshTokens.add(refresh);
        return json(res, 200, { access_token: access, refresh_token: refresh, token_type: 'Bearer', expires_in: 3600, scope }, { 'cache-control': 'no-store' });
      };
      if (form.get('grant_type') === 'authorization_code') {
        state.counts.codeExchanges++;
        const code = state.codes.get(form.get('code') ?? '');
        state.codes.delete(form.get('code') ?? '');
        const verifier = form.get('code_verifier') ?? '';
        const challenge = createHash('sha256').update(verifier).digest('base64url');
        if (!code || code.redirectUri !== form.get('redirect_uri') || code.challenge !== challenge) {
          state.violations.push('token: bad code, redirect_uri or code_verifier');
          return json(res, 400, { error: 'invalid_grant' });
        }
        return issue(code.scope);
      }
      if (form.get('grant_type') === 'refresh_token') {
        state.counts.refreshes++;
        const rt = form.get('refresh_token') ?? '';
        if (!state.refreshTokens.delete(rt)) return json(res, 400, { error: 'invalid_grant' });
        return issue('');
      }
      state.violations.push(`token: unexpected grant ${form.get('grant_type')}`);
      return json(res, 400, { error: 'unsupported_grant_type' });
    }

    if (p.startsWith('/api/v2/')) {
      state.counts.apiCalls++;
      const presented = credentialOf(req, url);
      if (presented === undefined) return json(res, 401, { error: 'unauthorized' }, { 'www-authenticate': 'Bearer' });
      const endpoint = p.slice('/api/v2/'.length);
      if (endpoint === 'echo') {
        const headers = { ...req.headers };
        return json(res, 200, {
          method: req.method,
          path: p,
          query: Object.fromEntries([...url.searchParams].filter(([k]) => k !== 'api_key')),
          headers,
          body: body.toString('utf8'),
          body_base64: body.toString('base64'),
          // A careless API that reflects the credential: tresor redacts it.
          token: presented,
        });
      }
      if (endpoint === 'shop.json') return json(res, 200, { shop: { id: 42, name: 'Demo shop' } });
      if (endpoint === 'text') {
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
        return res.end('hello, text');
      }
      if (endpoint === 'binary') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        return res.end(Buffer.from([...Array(256).keys()]));
      }
      if (endpoint === 'status') {
        const code = Number(url.searchParams.get('code') ?? '500');
        return json(res, code, { error: `status ${code}` });
      }
      return json(res, 404, { error: 'no such endpoint' });
    }

    // The OCP example's vendor: client credentials in a JSON body.
    if (p === '/vendor/token' && req.method === 'POST') {
      state.counts.vendorTokens++;
      let doc = {};
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        // answered below
      }
      if (doc.client_id !== 'vendor-id' || doc.client_secret !== 'vendor-secret' || doc.grant_type !== 'client_credentials') {
        return json(res, 401, { status: { message: 'bad vendor credentials' } });
      }
      return json(res, 200, { access_token: rand('vendor_'), token_type: 'bearer' });
    }

    // The workflow-engine example's API: a JWT from /auth/login, required by /api/data.
    if (p === '/auth/login' && req.method === 'POST') {
      state.counts.logins++;
      let doc = {};
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        // answered below
      }
      if (doc.username !== 'robot' || doc.password !== 'hunter2') return json(res, 401, { error: 'bad login' });
      const jwt = `eyJ.${randomBytes(12).toString('hex')}.sig`;
      state.jwts.add(jwt);
      return json(res, 200, { token: jwt });
    }
    if (p === '/api/data' && req.method === 'GET') {
      state.counts.dataCalls++;
      const auth = req.headers.authorization ?? '';
      if (!auth.startsWith('Bearer ') || !state.jwts.has(auth.slice(7))) return json(res, 401, { error: 'expired' });
      return json(res, 200, { items: [1, 2, 3] });
    }

    state.violations.push(`unexpected request ${req.method} ${p}`);
    return json(res, 404, { error: 'not_found' });
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
      state.violations.push(`handler error: ${e}`);
      res.writeHead(500);
      res.end();
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;

  return {
    base,
    apiBase: `${base}/api/v2/`,
    authorizeUrl: `${base}/oauth/authorize`,
    tokenUrl: `${base}/oauth/token`,
    state,
    acceptApiKey: (k) => state.apiKeys.add(k),
    acceptBasic: (user, pass) => state.basic.add(`${user}:${pass}`),
    acceptAccessToken: (t) => state.accessTokens.add(t),
    expireJwts: () => state.jwts.clear(),
    /**
     * The user's browser: opens `authorizeUrl` (the provider consents or denies at once), follows
     * the redirect to tresor's callback, and returns tresor's answer (status and Location).
     */
    async consent(authorizeUrl) {
      const a = await fetch(authorizeUrl, { redirect: 'manual' });
      const callback = a.headers.get('location');
      if (a.status !== 302 || !callback) throw new Error(`authorize answered ${a.status}`);
      const c = await fetch(callback, { redirect: 'manual' });
      await c.text();
      return { status: c.status, location: c.headers.get('location') };
    },
    close: () => new Promise((r) => server.close(r)),
  };
}

/** Registers the fake as tresor providers: `oauth` (bearer + OAuth), `keyed` (X-Api-Key), `basic`. */
export async function registerProviders(server, up, returnTo = 'https://app.example.com/settings') {
  const docs = {
    oauth: {
      base_url: up.apiBase,
      allow_private_network: true,
      inject: { type: 'bearer' },
      oauth2: {
        grant: 'authorization_code',
        authorize_url: up.authorizeUrl,
        token_url: up.tokenUrl,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        scopes: ['read'],
        pkce: true,
        return_to_prefixes: [returnTo],
      },
    },
    shopify: {
      base_url: up.apiBase,
      allow_private_network: true,
      inject: { type: 'bearer' },
      oauth2: {
        grant: 'authorization_code',
        authorize_url: up.authorizeUrl,
        token_url: up.tokenUrl,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        scopes: ['read_products'],
        pkce: true,
        return_to_prefixes: [returnTo],
      },
    },
    keyed: { base_url: up.apiBase, allow_private_network: true, inject: { type: 'header', name: 'X-Api-Key' } },
    basic: { base_url: up.apiBase, allow_private_network: true, inject: { type: 'basic' } },
  };
  for (const [name, doc] of Object.entries(docs)) {
    const r = await server.admin('PUT', `/v1/admin/providers/${name}`, doc);
    if (r.status !== 201 && r.status !== 200) throw new Error(`provider ${name}: ${r.status} ${r.text}`);
  }
}
