/**
 * The contract's record calls (`/v1/{store}/{key}`, field ops, batch) in one place; the
 * platform surfaces are thin shapes over these.
 */

import { PreconditionFailedError } from './errors.js';
import { fieldsParam, keySegment, type Answer, type Transport } from './transport.js';
import type { JsonValue, RecordMeta, StoreName, StoredRecord } from './types.js';

/** How often a read-compute-write tries before giving up on a contended key. */
export const UPDATE_ATTEMPTS = 100;

/** A field op of the contract (`POST /v1/{store}/{key}/ops`). */
export type FieldOp =
  | { op: 'increment'; field: string; by?: number }
  | { op: 'list_push'; field: string; values: unknown[]; end?: 'back' | 'front' }
  | { op: 'list_pop'; field: string; count?: number; end?: 'front' | 'back' }
  | { op: 'list_peek'; field: string; count?: number }
  | { op: 'set_add'; field: string; members: (string | number)[] }
  | { op: 'set_remove'; field: string; members: (string | number)[] }
  | { op: 'set_contains'; field: string; members: (string | number)[] };

const READ_OPS = new Set(['list_peek', 'set_contains']);

/** `RecordMeta` from the wire. */
export function metaFromWire(w: Record<string, unknown>): RecordMeta {
  return {
    key: String(w.key),
    version: Number(w.version),
    description: (w.description as string | null | undefined) ?? null,
    createdAt: String(w.created_at),
    updatedAt: String(w.updated_at),
    expiresAt: (w.expires_at as string | null | undefined) ?? null,
  };
}

/** `Record` from the wire. */
export function recordFromWire<T = JsonValue>(w: Record<string, unknown>): StoredRecord<T> {
  return { ...metaFromWire(w), value: w.value as T };
}

function previousOf(body: unknown): StoredRecord | null | undefined {
  if (typeof body !== 'object' || body === null || !('previous' in body)) return undefined;
  const p = (body as { previous: unknown }).previous;
  return p === null || p === undefined ? null : recordFromWire(p as Record<string, unknown>);
}

function etagOf(version: number | undefined): Record<string, string> {
  return version === undefined ? {} : { 'if-match': `"${version}"` };
}

function ttlParam(ttl: number | undefined): string | undefined {
  return ttl === undefined ? undefined : encodeURIComponent(String(ttl));
}

/** Seconds left until `expiresAt` on this machine's clock, at least 1; `undefined` without expiry. */
export function remainingTtl(expiresAt: string | null): number | undefined {
  if (expiresAt === null) return undefined;
  const ms = Date.parse(expiresAt) - Date.now();
  return Math.max(1, Math.ceil(ms / 1000));
}

export interface PutOptions {
  description?: string | null;
  ttlSeconds?: number;
  /** Only if the current version is this one (`If-Match`). */
  ifMatch?: number;
  /** Only if the key does not exist (`If-None-Match: *`). */
  ifNoneMatch?: boolean;
  returnPrevious?: boolean;
}

/** One record store seen through a transport. */
export class Records {
  constructor(
    readonly transport: Transport,
    readonly store: StoreName,
  ) {}

  private path(key: string, suffix = ''): string {
    return `/v1/${this.store}/${keySegment(key)}${suffix}`;
  }

  /** GET; `undefined` when the key does not exist (or expired). */
  async get<T = JsonValue>(key: string, fields?: readonly string[]): Promise<StoredRecord<T> | undefined> {
    const spec = {
      method: 'GET' as const,
      path: this.path(key),
      query: { fields: fieldsParam(fields) },
      repeatable: true,
      what: `GET ${this.store}`,
    };
    const a = await this.transport.send(spec);
    if (a.status === 404) return undefined;
    if (a.status !== 200) throw this.transport.error(a, spec);
    return recordFromWire<T>(a.body as Record<string, unknown>);
  }

  /** HEAD. */
  async exists(key: string): Promise<boolean> {
    const spec = { method: 'HEAD' as const, path: this.path(key), repeatable: true, what: `HEAD ${this.store}` };
    const a = await this.transport.send(spec);
    if (a.status === 404) return false;
    if (a.status >= 200 && a.status < 300) return true;
    throw this.transport.error(a, spec);
  }

  /** PUT; `previous` is set only when asked for (`null`: there was none). */
  async put(
    key: string,
    value: unknown,
    o: PutOptions = {},
  ): Promise<{ meta: RecordMeta; created: boolean; previous: StoredRecord | null | undefined }> {
    const headers: Record<string, string> = etagOf(o.ifMatch);
    if (o.ifNoneMatch) headers['if-none-match'] = '*';
    const body: Record<string, unknown> = { value };
    if (o.description !== undefined && o.description !== null) body.description = o.description;
    if (o.ttlSeconds !== undefined) body.ttl_seconds = o.ttlSeconds;
    const a = await this.transport.call({
      method: 'PUT',
      path: this.path(key),
      query: { return: o.returnPrevious ? 'previous' : undefined },
      headers,
      body,
      repeatable: !o.returnPrevious && o.ifMatch === undefined && !o.ifNoneMatch,
      what: `PUT ${this.store}`,
    });
    return {
      meta: metaFromWire(a.body as Record<string, unknown>),
      created: a.status === 201,
      previous: previousOf(a.body),
    };
  }

  /** PATCH (JSON Merge Patch); never repeated after a network failure. */
  async patch(
    key: string,
    patch: unknown,
    o: { ttlSeconds?: number; ifMatch?: number; returnPrevious?: boolean } = {},
  ): Promise<{ answer: Answer; previous: StoredRecord | null | undefined }> {
    const a = await this.transport.call({
      method: 'PATCH',
      path: this.path(key),
      query: { ttl_seconds: ttlParam(o.ttlSeconds), return: o.returnPrevious ? 'previous' : undefined },
      headers: etagOf(o.ifMatch),
      body: patch,
      contentType: 'application/merge-patch+json',
      repeatable: false,
      what: `PATCH ${this.store}`,
    });
    return { answer: a, previous: previousOf(a.body) };
  }

  /** DELETE (the whole record, or some fields); `previous` only when asked for. */
  async delete(
    key: string,
    o: { fields?: readonly string[]; ifMatch?: number; returnPrevious?: boolean } = {},
  ): Promise<StoredRecord | null | undefined> {
    const a = await this.transport.call({
      method: 'DELETE',
      path: this.path(key),
      query: { fields: fieldsParam(o.fields), return: o.returnPrevious ? 'previous' : undefined },
      headers: etagOf(o.ifMatch),
      repeatable: !o.returnPrevious && o.ifMatch === undefined,
      what: `DELETE ${this.store}`,
    });
    return previousOf(a.body);
  }

  /** Field ops in one atomic request; `results` has one entry per op. */
  async ops(key: string, ops: FieldOp[], ttlSeconds?: number): Promise<{ record: RecordMeta | null; results: unknown[] }> {
    const body: Record<string, unknown> = { ops };
    if (ttlSeconds !== undefined) body.ttl_seconds = ttlSeconds;
    const a = await this.transport.call({
      method: 'POST',
      path: this.path(key, '/ops'),
      body,
      // Only a request made of reads (list_peek, set_contains) is safe to repeat.
      repeatable: ops.every((o) => READ_OPS.has(o.op)),
      what: `field ops on ${this.store}`,
    });
    const b = a.body as { record: Record<string, unknown> | null; results: unknown[] };
    return { record: b.record ? metaFromWire(b.record) : null, results: b.results };
  }

  /**
   * Read-compute-write: reads the record, computes the next value, and writes it only if
   * nobody wrote in between (`If-Match`, or `If-None-Match: *` when missing), retrying on 412
   * up to {@link UPDATE_ATTEMPTS} times with a short jittered pause. `compute` may therefore
   * run more than once. Returns the record the write replaced (`undefined`: none).
   */
  async rewrite(
    key: string,
    compute: (
      current: StoredRecord | undefined,
    ) => Promise<{ value: unknown; description: string | null; ttlSeconds: number | undefined }>,
  ): Promise<StoredRecord | undefined> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.get(key);
      const next = await compute(current);
      try {
        await this.put(key, next.value, {
          description: next.description,
          ttlSeconds: next.ttlSeconds,
          ifMatch: current?.version,
          ifNoneMatch: current === undefined,
        });
        return current;
      } catch (e) {
        if (e instanceof PreconditionFailedError && attempt < UPDATE_ATTEMPTS) {
          await new Promise((r) => setTimeout(r, Math.random() * Math.min(100, 5 * attempt)));
          continue;
        }
        throw e;
      }
    }
  }
}
