/**
 * The OCP surface: `storage.secrets`, `storage.settings`, `storage.kvStore` and
 * `storage.sharedKvStore`, with the shapes of `@zaiusinc/app-sdk`.
 */

import { remainingTtl, type FieldOp, type Records } from './records.js';
import type { MultiValue, Value, ValueHash } from './types.js';

/** Options for a write (OCP's `KVRowOptions`). */
export interface KVRowOptions {
  /** Seconds until the record expires (1 to 3,153,600,000); `undefined` for no expiry. */
  ttl?: number;
}

/**
 * The callback form of `patch`: gets (a copy of) the current value, `{}` when missing, and the
 * record's remaining TTL in `options.ttl` (change it to change the TTL); returns the new value.
 * It may run more than once (when another writer got in between), so it must not have side
 * effects beyond computing the value. Returning `undefined` writes the (mutated) argument.
 */
export type PatchUpdater<T> = (previous: T, options: KVRowOptions) => T | void | Promise<T | void>;

/** OCP's `NumberSet`: the set values of the number-set helpers. */
export class NumberSet extends Set<number> {}
/** OCP's `StringSet`: the set values of the string-set helpers. */
export class StringSet extends Set<string> {}

function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

function pick(value: unknown, fields: readonly string[] | undefined): unknown {
  if (!fields || fields.length === 0 || typeof value !== 'object' || value === null || Array.isArray(value)) {
    return value;
  }
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    if (Object.prototype.hasOwnProperty.call(value, f)) out[f] = (value as Record<string, unknown>)[f];
  }
  return out;
}

/**
 * A store with OCP's basic calls: `secrets` and `settings` (and, with more, the key-value
 * stores). Every value is JSON; `get` of a missing key is `{}`.
 */
export class OcpStore {
  /** @internal */
  constructor(protected readonly records: Records) {}

  /**
   * The value at `key`, or only its top-level `fields`; `{}` when the key does not exist.
   * A value that is not an object with `fields` is a `ConflictError`.
   */
  async get<T = ValueHash>(key: string, fields?: string[]): Promise<T> {
    const r = await this.records.get<T>(key, fields);
    return r === undefined ? ({} as T) : r.value;
  }

  /** Replaces the value (last write wins), without expiry unless `options.ttl`; returns the previous value (`{}` when none). */
  async put<T = ValueHash>(key: string, value: T, options?: KVRowOptions): Promise<T> {
    const out = await this.records.put(key, value, { ttlSeconds: options?.ttl, returnPrevious: true });
    return (out.previous?.value ?? {}) as T;
  }

  /**
   * Atomically changes the value and returns the previous one (`{}` when none).
   *
   * - With an object: a JSON Merge Patch (RFC 7396) applied by the server in one step; fields
   *   not named are untouched, a `null` field removes it, nested objects merge. The expiry is
   *   kept unless `options.ttl` sets a new one.
   * - With a function ({@link PatchUpdater}): reads, computes and writes back with `If-Match`,
   *   retrying when another writer got in between — so the function may run more than once.
   *   The description and (unless the updater changes `options.ttl`) the remaining TTL are kept.
   */
  async patch<T = ValueHash>(key: string, value: Partial<T> | PatchUpdater<T>, options?: KVRowOptions): Promise<T> {
    if (typeof value === 'function') {
      const updater = value as PatchUpdater<T>;
      const previous = await this.records.rewrite(key, async (current) => {
        const opts: KVRowOptions = { ttl: options?.ttl ?? remainingTtl(current?.expiresAt ?? null) };
        const arg = (current === undefined ? {} : clone(current.value)) as T;
        const next = await updater(arg, opts);
        return {
          value: next === undefined ? arg : next,
          description: current?.description ?? null,
          ttlSeconds: opts.ttl,
        };
      });
      return (previous?.value ?? {}) as T;
    }
    const out = await this.records.patch(key, value, { ttlSeconds: options?.ttl, returnPrevious: true });
    return (out.previous?.value ?? {}) as T;
  }

  /**
   * Deletes the record, or only its top-level `fields`; returns what was deleted (the previous
   * value, or those of its fields), `{}` when there was nothing.
   */
  async delete<T = ValueHash>(key: string, fields?: string[]): Promise<T> {
    const previous = await this.records.delete(key, { fields, returnPrevious: true });
    if (!previous) return {} as T;
    return pick(previous.value, fields) as T;
  }

  /** Whether the key exists (and has not expired). */
  async exists(key: string): Promise<boolean> {
    return this.records.exists(key);
  }
}

/**
 * The key-value stores (`kvStore`, `sharedKvStore`): OCP's basic calls plus numbers, lists and
 * sets, each one request to tresor's atomic field-ops endpoint. A field that holds the wrong
 * type (a list op on a string) is a `ConflictError` and changes nothing.
 */
export class OcpKvStore extends OcpStore {
  private async run(key: string, ops: FieldOp[], options?: KVRowOptions): Promise<unknown[]> {
    if (ops.length === 0) return [];
    return (await this.records.ops(key, ops, options?.ttl)).results;
  }

  /** Adds `amount` (default 1, may be negative) to a numeric field, creating it; returns the new value. */
  async increment(key: string, field: string, amount = 1, options?: KVRowOptions): Promise<number> {
    const [n] = await this.run(key, [{ op: 'increment', field, by: amount }], options);
    return n as number;
  }

  /** {@link increment} of several fields at once; returns the new values. */
  async incrementMulti(
    key: string,
    fieldAmounts: MultiValue<number>,
    options?: KVRowOptions,
  ): Promise<MultiValue<number>> {
    const fields = Object.keys(fieldAmounts);
    const results = await this.run(key, fields.map((field) => ({ op: 'increment', field, by: fieldAmounts[field] })), options);
    return Object.fromEntries(fields.map((f, i) => [f, results[i] as number]));
  }

  /** Removes and returns the first element of a list; `undefined` when empty or missing (a missing record is not created). */
  async shift<T extends Value = Value>(key: string, field: string, options?: KVRowOptions): Promise<T | undefined> {
    const [removed] = await this.run(key, [{ op: 'list_pop', field, count: 1, end: 'front' }], options);
    return (removed as T[])[0];
  }

  /** Removes and returns up to `count` elements from the front of each list. */
  async shiftMulti<T extends Value = Value>(
    key: string,
    fieldCounts: MultiValue<number>,
    options?: KVRowOptions,
  ): Promise<MultiValue<T[]>> {
    return this.listMulti<T>(key, fieldCounts, 'list_pop', options);
  }

  /** Inserts `value` at the front of a list, creating it. */
  async unshift<T extends Value>(key: string, field: string, value: T, options?: KVRowOptions): Promise<void> {
    await this.run(key, [{ op: 'list_push', field, values: [value], end: 'front' }], options);
  }

  /** Inserts each array at the front of its list, in the order given. */
  async unshiftMulti<T extends Value>(key: string, fieldValues: MultiValue<T[]>, options?: KVRowOptions): Promise<void> {
    await this.push(key, fieldValues, 'front', options);
  }

  /** The first element of a list without removing it; `undefined` when empty or missing. */
  async peek<T extends Value = Value>(key: string, field: string): Promise<T | undefined> {
    const [elements] = await this.run(key, [{ op: 'list_peek', field, count: 1 }]);
    return (elements as T[])[0];
  }

  /** Up to `count` elements from the front of each list, without removing them. */
  async peekMulti<T extends Value = Value>(key: string, fieldCounts: MultiValue<number>): Promise<MultiValue<T[]>> {
    return this.listMulti<T>(key, fieldCounts, 'list_peek');
  }

  /** Appends `value` at the end of a list, creating it. */
  async append<T extends Value>(key: string, field: string, value: T, options?: KVRowOptions): Promise<void> {
    await this.run(key, [{ op: 'list_push', field, values: [value], end: 'back' }], options);
  }

  /** Appends each array at the end of its list. */
  async appendMulti<T extends Value>(key: string, fieldValues: MultiValue<T[]>, options?: KVRowOptions): Promise<void> {
    await this.push(key, fieldValues, 'back', options);
  }

  /** Adds a number to a set (a sorted array without duplicates); `true` when it was not there. */
  async addNumber(key: string, field: string, value: number, options?: KVRowOptions): Promise<boolean> {
    return this.setOne(key, field, checkNumber(value), 'set_add', options);
  }
  /** Adds numbers to sets; returns, per field, the numbers that were not there. */
  async addNumberMulti(key: string, fieldValues: MultiValue<number[]>, options?: KVRowOptions): Promise<MultiValue<NumberSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkNumber), 'set_add', () => new NumberSet(), options);
  }
  /** Removes a number from a set; `true` when it was there. */
  async removeNumber(key: string, field: string, value: number, options?: KVRowOptions): Promise<boolean> {
    return this.setOne(key, field, checkNumber(value), 'set_remove', options);
  }
  /** Removes numbers from sets; returns, per field, the numbers that were there. */
  async removeNumberMulti(key: string, fieldValues: MultiValue<number[]>, options?: KVRowOptions): Promise<MultiValue<NumberSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkNumber), 'set_remove', () => new NumberSet(), options);
  }
  /** Whether a set holds the number. */
  async hasNumber(key: string, field: string, value: number): Promise<boolean> {
    return this.setOne(key, field, checkNumber(value), 'set_contains');
  }
  /** Per field, the numbers the set holds. */
  async hasNumberMulti(key: string, fieldValues: MultiValue<number[]>): Promise<MultiValue<NumberSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkNumber), 'set_contains', () => new NumberSet());
  }
  /** Adds a string to a set; `true` when it was not there. */
  async addString(key: string, field: string, value: string, options?: KVRowOptions): Promise<boolean> {
    return this.setOne(key, field, checkString(value), 'set_add', options);
  }
  /** Adds strings to sets; returns, per field, the strings that were not there. */
  async addStringMulti(key: string, fieldValues: MultiValue<string[]>, options?: KVRowOptions): Promise<MultiValue<StringSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkString), 'set_add', () => new StringSet(), options);
  }
  /** Removes a string from a set; `true` when it was there. */
  async removeString(key: string, field: string, value: string, options?: KVRowOptions): Promise<boolean> {
    return this.setOne(key, field, checkString(value), 'set_remove', options);
  }
  /** Removes strings from sets; returns, per field, the strings that were there. */
  async removeStringMulti(key: string, fieldValues: MultiValue<string[]>, options?: KVRowOptions): Promise<MultiValue<StringSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkString), 'set_remove', () => new StringSet(), options);
  }
  /** Whether a set holds the string. */
  async hasString(key: string, field: string, value: string): Promise<boolean> {
    return this.setOne(key, field, checkString(value), 'set_contains');
  }
  /** Per field, the strings the set holds. */
  async hasStringMulti(key: string, fieldValues: MultiValue<string[]>): Promise<MultiValue<StringSet>> {
    return this.setMulti(key, checkMembers(fieldValues, checkString), 'set_contains', () => new StringSet());
  }

  private async push(key: string, fieldValues: MultiValue<Value[]>, end: 'front' | 'back', options?: KVRowOptions) {
    const ops: FieldOp[] = [];
    for (const [field, values] of Object.entries(fieldValues)) {
      if (!Array.isArray(values)) throw new TypeError(`the values for field ${JSON.stringify(field)} must be an array`);
      if (values.length > 0) ops.push({ op: 'list_push', field, values, end });
    }
    await this.run(key, ops, options);
  }

  private async listMulti<T>(
    key: string,
    fieldCounts: MultiValue<number>,
    op: 'list_pop' | 'list_peek',
    options?: KVRowOptions,
  ): Promise<MultiValue<T[]>> {
    const out: MultiValue<T[]> = {};
    const asked: string[] = [];
    const ops: FieldOp[] = [];
    for (const [field, count] of Object.entries(fieldCounts)) {
      out[field] = [];
      if (count === 0) continue; // "up to 0 elements": nothing to ask for
      asked.push(field);
      ops.push(op === 'list_pop' ? { op, field, count, end: 'front' } : { op, field, count });
    }
    const results = await this.run(key, ops, options);
    asked.forEach((f, i) => (out[f] = results[i] as T[]));
    return out;
  }

  private async setOne(
    key: string,
    field: string,
    member: string | number,
    op: 'set_add' | 'set_remove' | 'set_contains',
    options?: KVRowOptions,
  ): Promise<boolean> {
    const [r] = await this.run(key, [{ op, field, members: [member] }], options);
    return op === 'set_contains' ? (r as boolean[])[0] === true : r === 1;
  }

  /**
   * Adds or removes report only how many members changed, so each field is asked
   * `set_contains` first, in the same atomic request, to tell which ones.
   */
  private async setMulti<S extends Set<string> | Set<number>>(
    key: string,
    fieldValues: MultiValue<(string | number)[]>,
    op: 'set_add' | 'set_remove' | 'set_contains',
    empty: () => S,
    options?: KVRowOptions,
  ): Promise<MultiValue<S>> {
    const out: MultiValue<S> = {};
    const asked: [string, (string | number)[]][] = [];
    const ops: FieldOp[] = [];
    for (const [field, members] of Object.entries(fieldValues)) {
      out[field] = empty();
      if (members.length === 0) continue;
      asked.push([field, members]);
      ops.push({ op: 'set_contains', field, members });
      if (op !== 'set_contains') ops.push({ op, field, members });
    }
    const results = await this.run(key, ops, options);
    const stride = op === 'set_contains' ? 1 : 2;
    asked.forEach(([field, members], i) => {
      const held = results[i * stride] as boolean[];
      members.forEach((m, j) => {
        // add: the ones not held before; remove and contains: the ones held.
        if (held[j] !== (op === 'set_add')) (out[field] as Set<string | number>).add(m);
      });
    });
    return out;
  }
}

function checkNumber(v: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new TypeError('the value must be a finite number');
  return v;
}

function checkString(v: string): string {
  if (typeof v !== 'string') throw new TypeError('the value must be a string');
  return v;
}

function checkMembers<T>(fieldValues: MultiValue<T[]>, check: (v: T) => T): MultiValue<T[]> {
  for (const [field, values] of Object.entries(fieldValues)) {
    if (!Array.isArray(values)) throw new TypeError(`the values for field ${JSON.stringify(field)} must be an array`);
    values.forEach(check);
  }
  return fieldValues;
}

/** OCP's `storage` namespace: the four stores. */
export interface OcpStorage {
  /** The secrets store (tresor's `secrets`). */
  readonly secrets: OcpStore;
  /** The settings store (tresor's `settings`). */
  readonly settings: OcpStore;
  /** The key-value store (tresor's `kv`). */
  readonly kvStore: OcpKvStore;
  /** The key-value store shared by every installation of the app (tresor's `shared`). */
  readonly sharedKvStore: OcpKvStore;
}
