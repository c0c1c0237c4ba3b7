/**
 * The Forge surface: `storage.setSecret` / `getSecret` / `deleteSecret` (`@forge/api`), the
 * same three on `kvs` (`@forge/kvs`), and `kvs.batch` over tresor's atomic batch. Secrets live
 * in tresor's `secrets` store.
 */

import { TresorError, errorFromAnswer } from './errors.js';
import { metaFromWire, recordFromWire, type Records } from './records.js';
import { keySegment, type Transport } from './transport.js';
import type { JsonValue, StoreName } from './types.js';

/**
 * tresor's own options of `setSecret` (not Forge's): an expiry, and `keyPolicy:
 * 'FAIL_IF_EXISTS'` to write only when the key does not exist (a `PreconditionFailedError`
 * otherwise).
 */
export interface SetSecretOptions {
  /** Seconds until the secret expires (1 to 3,153,600,000). Without it, any earlier expiry is removed. */
  ttlSeconds?: number;
  keyPolicy?: 'FAIL_IF_EXISTS';
}

/**
 * What Forge stores: an array, boolean, number, object or string (any JSON value but `null`;
 * `Set`s are written as arrays).
 */
export type SecretValue = string | number | boolean | object;

/** The three secret calls of Forge. */
export interface ForgeSecrets {
  /** Stores `value` (any JSON value but `null`) under `key`; last write wins. */
  setSecret(key: string, value: SecretValue, options?: SetSecretOptions): Promise<void>;
  /** The value stored under `key`, or `undefined` when there is none. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  getSecret<T = any>(key: string): Promise<T | undefined>;
  /** Deletes the secret; succeeds whether or not it exists. */
  deleteSecret(key: string): Promise<void>;
}

/** One op of {@link Kvs.batch}. `store` defaults to `secrets`, where `setSecret` writes. */
export type BatchOp =
  | { op: 'get'; key: string; store?: StoreName }
  | { op: 'exists'; key: string; store?: StoreName }
  | {
      op: 'set';
      key: string;
      value: SecretValue;
      store?: StoreName;
      description?: string;
      ttlSeconds?: number;
      keyPolicy?: 'FAIL_IF_EXISTS';
      /** Only if the current version is this one (0: only if the key does not exist). */
      ifVersion?: number;
    }
  | {
      op: 'patch';
      key: string;
      /** A JSON Merge Patch (RFC 7396). */
      value: SecretValue;
      store?: StoreName;
      ttlSeconds?: number;
      ifVersion?: number;
    }
  | { op: 'delete'; key: string; store?: StoreName; ifVersion?: number };

/** The result of one op of {@link Kvs.batch}, in the order of the ops. */
export interface BatchResult {
  /** The HTTP status of that op: get 200 or 404, exists 200 or 404, set 201 or 200, patch 200, delete 204. */
  status: number;
  /** `get` and `patch`: the (new) value; `undefined` for a `get` of a missing key. */
  value?: JsonValue;
  /** `exists`: whether the key exists. */
  exists?: boolean;
  /** The record's version after the op, when it has one. */
  version?: number;
}

/** Forge's `kvs`: the secret calls and an atomic batch. */
export interface Kvs extends ForgeSecrets {
  /**
   * Runs 1–100 ops as one atomic, serializable transaction (tresor's `POST /v1/batch` with
   * `atomic: true`): a later op sees the earlier ops' writes; if a write fails, nothing is
   * written and the op's error is thrown with `opIndex`. A `get` or `exists` of a missing key
   * is a result (status 404), not a failure. tresor's own, not Forge's.
   */
  batch(ops: BatchOp[]): Promise<BatchResult[]>;
}

/** Forge's secret calls over a `secrets` store. */
export function forgeSecrets(secrets: Records): ForgeSecrets {
  return {
    async setSecret(key: string, value: SecretValue, options?: SetSecretOptions): Promise<void> {
      const policy = options?.keyPolicy;
      if (policy !== undefined && policy !== 'FAIL_IF_EXISTS') {
        throw new TypeError(`unknown keyPolicy ${JSON.stringify(policy)} (only 'FAIL_IF_EXISTS')`);
      }
      await secrets.put(key, value, { ttlSeconds: options?.ttlSeconds, ifNoneMatch: policy === 'FAIL_IF_EXISTS' });
    },
    async getSecret<T>(key: string): Promise<T | undefined> {
      return (await secrets.get<T>(key))?.value;
    },
    async deleteSecret(key: string): Promise<void> {
      await secrets.delete(key);
    },
  };
}

function batchOpToWire(op: BatchOp): Record<string, unknown> {
  const store = op.store ?? 'secrets';
  keySegment(op.key); // the same checks as a single call
  const w: Record<string, unknown> = { op: op.op === 'set' ? 'put' : op.op, store, key: op.key };
  switch (op.op) {
    case 'get':
    case 'exists':
      break;
    case 'set':
      w.value = op.value;
      if (op.description !== undefined) w.description = op.description;
      if (op.ttlSeconds !== undefined) w.ttl_seconds = op.ttlSeconds;
      if (op.keyPolicy === 'FAIL_IF_EXISTS') {
        if (op.ifVersion !== undefined && op.ifVersion !== 0) {
          throw new TypeError("keyPolicy 'FAIL_IF_EXISTS' and a non-zero ifVersion contradict each other");
        }
        w.if_version = 0;
      } else if (op.keyPolicy !== undefined) {
        throw new TypeError(`unknown keyPolicy ${JSON.stringify(op.keyPolicy)} (only 'FAIL_IF_EXISTS')`);
      } else if (op.ifVersion !== undefined) {
        w.if_version = op.ifVersion;
      }
      break;
    case 'patch':
      w.value = op.value;
      if (op.ttlSeconds !== undefined) w.ttl_seconds = op.ttlSeconds;
      if (op.ifVersion !== undefined) w.if_version = op.ifVersion;
      break;
    case 'delete':
      if (op.ifVersion !== undefined) w.if_version = op.ifVersion;
      break;
    default:
      throw new TypeError(`unknown batch op ${JSON.stringify((op as { op: unknown }).op)}`);
  }
  return w;
}

/** `kvs.batch` over a transport. */
export function batch(transport: Transport) {
  return async (ops: BatchOp[]): Promise<BatchResult[]> => {
    if (!Array.isArray(ops)) throw new TypeError('batch takes an array of ops');
    const wire = ops.map(batchOpToWire);
    const a = await transport.call({
      method: 'POST',
      path: '/v1/batch',
      body: { atomic: true, ops: wire },
      // A batch of reads only is safe to repeat; one with a write is not.
      repeatable: ops.every((o) => o.op === 'get' || o.op === 'exists'),
      what: 'batch',
    });
    const results = (a.body as { results: Record<string, unknown>[] }).results;
    return results.map((r, i) => {
      const status = Number(r.status);
      const kind = ops[i]!.op;
      const out: BatchResult = { status };
      const rec = r.record as Record<string, unknown> | undefined;
      if (kind === 'exists') out.exists = status === 200;
      if (rec) {
        out.version = metaFromWire(rec).version;
        if ((kind === 'get' || kind === 'patch') && 'value' in rec) out.value = recordFromWire(rec).value;
      }
      if (status >= 400 && !(status === 404 && (kind === 'get' || kind === 'exists'))) {
        // Not expected in an atomic batch (a failed write fails the whole request), but never silently.
        throw withIndex(errorFromAnswer(status, r, a.requestId, undefined, `batch op ${i}`), i);
      }
      return out;
    });
  };
}

function withIndex(e: TresorError, i: number): TresorError {
  if (e.opIndex !== undefined) return e;
  const Cls = e.constructor as new (m: string, init: ConstructorParameters<typeof TresorError>[1]) => TresorError;
  return new Cls(e.message, { code: e.code, status: e.status, requestId: e.requestId, opIndex: i });
}
