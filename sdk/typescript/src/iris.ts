/**
 * The workflow engine's surface: `SetSecret`, `GetSecret` and `DeleteSecret`, over tresor's
 * `secrets` store, as `await`-able functions.
 */

import { ConfigError, ForbiddenError, TresorError } from './errors.js';
import { remainingTtl, type Records } from './records.js';

export interface IrisSecrets {
  /**
   * Creates or updates the secret `name` with the string `value`, and its description when one
   * is given (a string); without one (omitted or `null`) an existing secret keeps its
   * description. An existing secret keeps its expiry either way ("updates the existing secret's
   * value"). This reads, then writes only if nobody wrote in between (retrying otherwise); with a
   * token that may write but not read `secrets`, it is a plain create-or-replace.
   * Resolves `true` on success and `false` when tresor refused or could not be reached (the
   * engine's contract); a missing configuration (`ConfigError`) and a non-string name or value
   * (`TypeError`) still throw, as programming errors.
   */
  SetSecret(name: string, value: string, description?: string | null): Promise<boolean>;
  /**
   * The secret's value, or `null` when there is none. A value stored by another surface that is
   * not a string comes back as its JSON text. Other failures throw (a `TresorError`): an outage
   * must not look like a missing secret, or a script would take its "not configured" branch.
   */
  GetSecret(name: string): Promise<string | null>;
  /** Deletes the secret; `true` on success (also when there was none), `false` when tresor refused or could not be reached. */
  DeleteSecret(name: string): Promise<boolean>;
}

function failed(e: unknown): boolean {
  if (e instanceof ConfigError) throw e;
  if (e instanceof TresorError) return false;
  throw e;
}

/** The three functions over a `secrets` store. */
export function irisSecrets(secrets: Records): IrisSecrets {
  return {
    async SetSecret(name: string, value: string, description?: string | null): Promise<boolean> {
      if (typeof name !== 'string') throw new TypeError('SetSecret: the name must be a string');
      if (typeof value !== 'string') throw new TypeError('SetSecret: the value must be a string');
      const given = typeof description === 'string' ? description : undefined;
      try {
        try {
          await secrets.rewrite(name, async (current) => ({
            value,
            description: given ?? current?.description ?? null,
            ttlSeconds: remainingTtl(current?.expiresAt ?? null),
          }));
        } catch (e) {
          // A token that may write but not read cannot keep what it cannot see: a plain
          // create-or-replace then.
          // (When the write itself was refused, this one is refused too.)
          if (!(e instanceof ForbiddenError)) throw e;
          await secrets.put(name, value, { description: given });
        }
        return true;
      } catch (e) {
        return failed(e);
      }
    },
    async GetSecret(name: string): Promise<string | null> {
      if (typeof name !== 'string') throw new TypeError('GetSecret: the name must be a string');
      const r = await secrets.get(name);
      if (r === undefined) return null;
      return typeof r.value === 'string' ? r.value : JSON.stringify(r.value);
    },
    async DeleteSecret(name: string): Promise<boolean> {
      if (typeof name !== 'string') throw new TypeError('DeleteSecret: the name must be a string');
      try {
        await secrets.delete(name);
        return true;
      } catch (e) {
        return failed(e);
      }
    },
  };
}
