/**
 * The applet platform's surface (`ctx.sdk`): write-only credentials, requests the host
 * authenticates (`http.requestAuthed`), and the host-side OAuth authorization-code flow.
 *
 * No method here returns a credential secret: every answer is rebuilt field by field from the
 * contract's metadata, so even a server bug could not pass a secret through. The single
 * exception is the contract's: `completeAuthCodeFlow` returns the new access token once.
 */

import { keySegment, type Transport } from './transport.js';
import type { JsonObject, JsonValue } from './types.js';

/** Who holds a credential: the account (every installation of the app in it; the default here) or the installation. */
export type CredentialOwner = 'account' | 'installation';

/** A credential's metadata (the contract's `CredentialMeta`, in camelCase). Never the secret. */
export interface CredentialMetadata {
  key: string;
  owner: CredentialOwner;
  /** The provider's name (operator configuration); it decides how the credential is injected. */
  provider: string;
  /** `oauth2`, `api_key`, `basic` or `client_credentials`, derived from the secret's fields. */
  kind: string;
  version: number;
  createdAt: string;
  updatedAt: string;
  /** When the credential itself expires (its TTL). */
  expiresAt: string | null;
  /** When the stored OAuth access token expires (the host refreshes it before). */
  tokenExpiresAt: string | null;
  scopes: string[];
  /** What was stored as `metadata` (never secret). */
  metadata: JsonObject;
  /** `true` once the provider revoked the grant: run the OAuth flow again. */
  needsReconsent: boolean;
}

/** What `credentials.store` takes. */
export interface StoreCredentialInput {
  /** The credential key (the applet owns the naming, e.g. `shopify:${resourceId}`). */
  key: string;
  /** The provider's name. */
  provider: string;
  /** E.g. `{ api_key }`, `{ username, password }`, or `{ access_token, refresh_token?, expires_at? }`. Sent once, never returned. */
  secret: Record<string, unknown>;
  /** Non-secret data (e.g. what the provider's `{metadata.NAME}` URL placeholders use), at most 16 KiB. */
  metadata?: JsonObject;
  /** Default `'account'`, as the applet platform's credentials belong to the site. */
  owner?: CredentialOwner;
  /** Expire the credential after this many seconds. */
  ttlSeconds?: number;
  /** The applet platform's `source`: accepted and ignored (tresor has no counterpart). */
  source?: string;
}

/** An authenticated request: the host injects the credential of `resourceId`. */
export interface RequestAuthedInput {
  /** Mapped to the credential key by `credentialKeyFor` (identity by default). */
  resourceId: string;
  /** Default `GET`. */
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS';
  /** Appended to the provider's base URL (one leading `/` removed). */
  path?: string;
  query?: Record<string, string | string[]>;
  /** Never `Authorization`, nor the header the credential is injected in (400). */
  headers?: Record<string, string>;
  /**
   * A string is sent as it is (`text/plain;charset=UTF-8` unless `headers` say otherwise), bytes
   * as they are, and any other value as JSON (`application/json`).
   */
  body?: JsonValue | Uint8Array | ArrayBuffer;
}

/** The provider's answer, as the host got it (after redaction of the injected secret). */
export interface AuthedResponse {
  /** The provider's status; a 4xx or 5xx of the provider is an answer, not an exception. */
  status: number;
  ok: boolean;
  /** Lowercase header names; `set-cookie` is dropped. */
  headers: Record<string, string>;
  /** Parsed JSON for JSON answers, a string for text, bytes otherwise, `undefined` for HEAD. */
  body: JsonValue | Uint8Array | undefined;
}

/** Where an OAuth flow puts its token. */
export interface StoreAs {
  key: string;
  /** Default `'account'`. */
  owner?: CredentialOwner;
  /** The applet platform's `source`: accepted and ignored. */
  source?: string;
  /** The applet platform's optional provider tag; must match `provider` when both are given. */
  provider?: string;
}

export interface StartAuthCodeFlowInput {
  /** The provider's name; may instead be given as `storeAs.provider`. */
  provider?: string;
  storeAs: StoreAs;
  /** Scopes to ask for (default: the provider's). */
  scopes?: string[];
  /** Where the user's browser returns after consent; must start with one of the provider's `return_to_prefixes`. */
  returnTo?: string;
}

export interface AuthCodeFlow {
  flowId: string;
  /** Send the user's browser here. */
  authorizeUrl: string;
  expiresAt: string;
}

export interface AuthCodeFlowStatus {
  flowId: string;
  status: 'pending' | 'completed' | 'failed' | 'expired';
  /** The provider's error, when failed. */
  error?: string;
  expiresAt: string;
}

export interface CompletedAuthCodeFlow {
  /** Returned once, for setup; do not keep it: use `http.requestAuthed`. */
  accessToken: string;
  credential: CredentialMetadata;
}

/** The applet platform's `sdk`. */
export interface Sdk {
  credentials: {
    /** Stores (creates or replaces) a credential; returns its metadata, never the secret. */
    store(input: StoreCredentialInput): Promise<CredentialMetadata>;
    /** The credential's metadata, or `undefined` when there is none. */
    getMetadata(key: string): Promise<CredentialMetadata | undefined>;
    /** Every credential's metadata (the installation's and its account's), in key order. */
    list(options?: { prefix?: string }): Promise<CredentialMetadata[]>;
    /** Deletes the credential; succeeds whether or not it exists. tresor's own. */
    delete(key: string): Promise<void>;
  };
  http: {
    /** Makes the request with the credential injected by the host. */
    requestAuthed(input: RequestAuthedInput): Promise<AuthedResponse>;
  };
  oauth: {
    /** Starts a flow; send the user to `authorizeUrl`. The host keeps the PKCE verifier and the state. */
    startAuthCodeFlow(input: StartAuthCodeFlowInput): Promise<AuthCodeFlow>;
    /** The flow's status (tresor's own). */
    getAuthCodeFlow(input: { flowId: string }): Promise<AuthCodeFlowStatus>;
    /**
     * The setup result: the access token, exactly once (`GoneError` afterwards or when expired;
     * `ConflictError` while pending or after a failure). Never retried by the SDK.
     */
    completeAuthCodeFlow(input: { flowId: string }): Promise<CompletedAuthCodeFlow>;
  };
}

/** What a handler of the applet platform receives; only `sdk` is provided here. */
export interface AppletContext {
  sdk: Sdk;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : String(v);
}

function strOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** `CredentialMeta` from the wire, field by field (nothing else passes). */
export function credentialFromWire(w: Record<string, unknown>): CredentialMetadata {
  return {
    key: str(w.key),
    owner: w.owner === 'account' ? 'account' : 'installation',
    provider: str(w.provider),
    kind: str(w.kind),
    version: Number(w.version),
    createdAt: str(w.created_at),
    updatedAt: str(w.updated_at),
    expiresAt: strOrNull(w.expires_at),
    tokenExpiresAt: strOrNull(w.token_expires_at),
    scopes: Array.isArray(w.scopes) ? w.scopes.map(str) : [],
    metadata:
      typeof w.metadata === 'object' && w.metadata !== null && !Array.isArray(w.metadata)
        ? (w.metadata as JsonObject)
        : {},
    needsReconsent: w.needs_reconsent === true,
  };
}

function owner(o: CredentialOwner | undefined): CredentialOwner {
  if (o === undefined) return 'account';
  if (o !== 'account' && o !== 'installation') throw new TypeError(`owner must be 'account' or 'installation'`);
  return o;
}

function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

const SAFE_UPSTREAM_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The `sdk` object over a transport. */
export function createSdk(t: Transport): Sdk {
  const credentials: Sdk['credentials'] = {
    async store(input) {
      const body: Record<string, unknown> = {
        owner: owner(input.owner),
        provider: input.provider,
        secret: input.secret,
      };
      if (input.metadata !== undefined) body.metadata = input.metadata;
      if (input.ttlSeconds !== undefined) body.ttl_seconds = input.ttlSeconds;
      const a = await t.call({
        method: 'PUT',
        path: `/v1/credentials/${keySegment(input.key, 'credential key')}`,
        body,
        repeatable: true, // an unconditional PUT: repeating it stores the same credential
        what: 'store credential',
      });
      return credentialFromWire(a.body as Record<string, unknown>);
    },
    async getMetadata(key) {
      const spec = {
        method: 'GET' as const,
        path: `/v1/credentials/${keySegment(key, 'credential key')}`,
        repeatable: true,
        what: 'credential metadata',
      };
      const a = await t.send(spec);
      if (a.status === 404) return undefined;
      if (a.status !== 200) throw t.error(a, spec);
      return credentialFromWire(a.body as Record<string, unknown>);
    },
    async list(options) {
      const out: CredentialMetadata[] = [];
      let cursor: string | undefined;
      do {
        const a = await t.call({
          method: 'GET',
          path: '/v1/credentials',
          query: {
            prefix: options?.prefix ? encodeURIComponent(options.prefix) : undefined,
            limit: '1000',
            cursor: cursor === undefined ? undefined : encodeURIComponent(cursor),
          },
          repeatable: true,
          what: 'list credentials',
        });
        const page = a.body as { items: Record<string, unknown>[]; next_cursor: string | null };
        out.push(...page.items.map(credentialFromWire));
        cursor = page.next_cursor ?? undefined;
      } while (cursor !== undefined);
      return out;
    },
    async delete(key) {
      await t.call({
        method: 'DELETE',
        path: `/v1/credentials/${keySegment(key, 'credential key')}`,
        repeatable: true,
        what: 'delete credential',
      });
    },
  };

  const http: Sdk['http'] = {
    async requestAuthed(input) {
      const cfg = t.resolved();
      const key = cfg.credentialKeyFor(input.resourceId);
      const method = (input.method ?? 'GET').toUpperCase();
      const body: Record<string, unknown> = { method };
      if (input.path !== undefined) body.path = input.path;
      if (input.query !== undefined) body.query = input.query;
      const headers: Record<string, string> = { ...input.headers };
      const b = input.body;
      if (b !== undefined) {
        if (b instanceof Uint8Array || b instanceof ArrayBuffer) {
          body.body_base64 = base64(b instanceof Uint8Array ? b : new Uint8Array(b));
        } else if (typeof b === 'string') {
          body.body_base64 = base64(new TextEncoder().encode(b));
          if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
            headers['content-type'] = 'text/plain;charset=UTF-8';
          }
        } else {
          body.body = b;
        }
      }
      if (Object.keys(headers).length > 0) body.headers = headers;
      const a = await t.call({
        method: 'POST',
        path: `/v1/credentials/${keySegment(key, 'credential key')}/request`,
        body,
        // Repeated after a network failure only when the provider call itself is safe.
        repeatable: SAFE_UPSTREAM_METHODS.has(method),
        what: 'authenticated request',
      });
      const doc = a.body as { status: number; headers?: Record<string, string>; body?: JsonValue; body_base64?: string };
      return {
        status: doc.status,
        ok: doc.status >= 200 && doc.status < 300,
        headers: doc.headers ?? {},
        body: doc.body_base64 !== undefined ? fromBase64(doc.body_base64) : doc.body,
      };
    },
  };

  const oauth: Sdk['oauth'] = {
    async startAuthCodeFlow(input) {
      const provider = input.provider ?? input.storeAs?.provider;
      if (!provider) throw new TypeError('startAuthCodeFlow needs a provider');
      if (input.provider && input.storeAs.provider && input.provider !== input.storeAs.provider) {
        throw new TypeError('provider and storeAs.provider differ');
      }
      keySegment(input.storeAs.key, 'credential key');
      const body: Record<string, unknown> = {
        provider,
        store_as: { key: input.storeAs.key, owner: owner(input.storeAs.owner) },
      };
      if (input.scopes !== undefined) body.scopes = input.scopes;
      if (input.returnTo !== undefined) body.return_to = input.returnTo;
      const a = await t.call({ method: 'POST', path: '/v1/oauth/flows', body, repeatable: false, what: 'start OAuth flow' });
      const w = a.body as Record<string, unknown>;
      return { flowId: str(w.flow_id), authorizeUrl: str(w.authorize_url), expiresAt: str(w.expires_at) };
    },
    async getAuthCodeFlow({ flowId }) {
      const a = await t.call({
        method: 'GET',
        path: `/v1/oauth/flows/${keySegment(flowId, 'flow id')}`,
        repeatable: true,
        what: 'OAuth flow status',
      });
      const w = a.body as Record<string, unknown>;
      const out: AuthCodeFlowStatus = {
        flowId: str(w.flow_id),
        status: str(w.status) as AuthCodeFlowStatus['status'],
        expiresAt: str(w.expires_at),
      };
      if (typeof w.error === 'string') out.error = w.error;
      return out;
    },
    async completeAuthCodeFlow({ flowId }) {
      const a = await t.call({
        method: 'POST',
        path: `/v1/oauth/flows/${keySegment(flowId, 'flow id')}/complete`,
        repeatable: false, // a one-time result: a repeat would answer 410
        what: 'complete OAuth flow',
      });
      const w = a.body as Record<string, unknown>;
      return {
        accessToken: str(w.access_token),
        credential: credentialFromWire(w.credential as Record<string, unknown>),
      };
    },
  };

  return { credentials, http, oauth };
}
