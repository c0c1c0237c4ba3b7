/** A JSON value, as tresor stores it (a stored value is never a top-level `null`). */
export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** OCP's value types: what a field of a {@link ValueHash} may hold. */
export type PrimitiveValue = string | number | boolean | null;
export type Value = PrimitiveValue | Value[] | ValueHash | Set<string> | Set<number>;

/**
 * OCP's `ValueHash`: an object of fields. Interfaces that extend it can declare optional fields.
 * `Set`s are written as tresor's sets (sorted arrays without duplicates) and read back as arrays.
 */
export interface ValueHash {
  [field: string]: Value | undefined;
}

/** A hash of fields to values of one type, used by the key-value store's `…Multi` methods (OCP's `MultiValue`). */
export interface MultiValue<T> {
  [field: string]: T;
}

/** The record stores of tresor. */
export type StoreName = 'secrets' | 'settings' | 'kv' | 'shared';

/** A record's metadata (the contract's `RecordMeta`, in camelCase). */
export interface RecordMeta {
  key: string;
  version: number;
  description: string | null;
  createdAt: string;
  updatedAt: string;
  expiresAt: string | null;
}

/** A record: its metadata and its value. */
export interface StoredRecord<T = JsonValue> extends RecordMeta {
  value: T;
}

/**
 * The `fetch` the SDK calls: Node's global `fetch` by default. Pass your own to add an agent,
 * tracing, or to observe requests in tests.
 */
export type FetchLike = (
  url: string,
  init: {
    method: string;
    headers: Record<string, string>;
    body?: string;
    redirect: 'manual';
    signal?: AbortSignal;
  },
) => Promise<{
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}>;

/** Options of {@link createStorage} and {@link configure}. */
export interface StorageOptions {
  /** tresor's base URL, e.g. `https://tresor.internal:8200`. Default: `TRESOR_ADDR`, else `http://127.0.0.1:8200`. */
  url?: string;
  /** The installation token. Default: `TRESOR_TOKEN`. */
  token?: string;
  /**
   * Maps the `resourceId` of `sdk.http.requestAuthed` to a credential key (the applet
   * platform's `storeAs.key`). Default: the identity.
   */
  credentialKeyFor?: (resourceId: string) => string;
  /** Retries of a call that is safe to repeat (see the README's retry rule). Default 2. */
  retries?: number;
  /** Deadline of one HTTP attempt, in milliseconds. Default 100000 (a proxied request may wait for a token refresh and a slow provider). */
  timeoutMs?: number;
  /** The longest `Retry-After` the SDK waits for on its own; a longer one is thrown as the error. Default 10000 ms. */
  maxRetryDelayMs?: number;
  /** The `fetch` to use. Default: the global `fetch` (Node 18 or later). */
  fetch?: FetchLike;
}
