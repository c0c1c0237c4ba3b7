/**
 * The one place that talks HTTP: configuration, the request id, the retry rule, and turning
 * answers into results or typed errors.
 */

import {
  ConfigError,
  InvalidRequestError,
  NetworkError,
  TresorError,
  UnexpectedResponseError,
  contractError,
  errorFromAnswer,
} from './errors.js';
import type { FetchLike, StorageOptions } from './types.js';

/** The address used when neither `url` nor `TRESOR_ADDR` is given. */
export const DEFAULT_URL = 'http://127.0.0.1:8200';

const DEFAULT_RETRIES = 2;
const DEFAULT_TIMEOUT_MS = 100_000;
const DEFAULT_MAX_RETRY_DELAY_MS = 10_000;

/** Resolved configuration of one call. */
export interface Resolved {
  baseUrl: string;
  token: string;
  retries: number;
  timeoutMs: number;
  maxRetryDelayMs: number;
  fetch: FetchLike;
  credentialKeyFor: (resourceId: string) => string;
}

/** One HTTP request of the contract. */
export interface RequestSpec {
  method: 'GET' | 'HEAD' | 'PUT' | 'PATCH' | 'DELETE' | 'POST';
  /** The path, already percent-encoded, starting with `/v1/`. */
  path: string;
  /** Query parameters, already percent-encoded; `undefined` values are left out. */
  query?: Record<string, string | undefined>;
  headers?: Record<string, string>;
  /** Sent as JSON (serialized by {@link toJson}). */
  body?: unknown;
  contentType?: string;
  /**
   * Whether the request may be sent again after a network failure (no answer, or a broken
   * one), i.e. repeating it cannot change what the caller sees. See {@link isRepeatable}.
   */
  repeatable: boolean;
  /** A short description for error messages (never a value). */
  what: string;
}

/** An answer, whatever its status. */
export interface Answer {
  status: number;
  /** The parsed JSON body; `undefined` when there is none. */
  body: unknown;
  requestId: string | undefined;
  etag: string | null;
}

function env(name: string): string | undefined {
  const v = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[name];
  return v === undefined || v === '' ? undefined : v;
}

/** Resolves options, falling back to `TRESOR_ADDR` and `TRESOR_TOKEN` read now. */
export function resolve(options: StorageOptions): Resolved {
  const url = options.url ?? env('TRESOR_ADDR') ?? DEFAULT_URL;
  const token = options.token ?? env('TRESOR_TOKEN');
  if (token === undefined || token === '') {
    throw new ConfigError('no tresor token: pass `token` or set TRESOR_TOKEN', { code: 'config_error', status: 0 });
  }
  if (/[\s\u0000-\u001f\u007f]/.test(token)) {
    throw new ConfigError('the tresor token holds whitespace or control characters', { code: 'config_error', status: 0 });
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ConfigError(`not a URL: ${JSON.stringify(url)} (TRESOR_ADDR or \`url\`)`, { code: 'config_error', status: 0 });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new ConfigError(`the tresor URL must be http(s), not ${parsed.protocol}`, { code: 'config_error', status: 0 });
  }
  if (parsed.search || parsed.hash || parsed.username || parsed.password) {
    throw new ConfigError('the tresor URL must not carry a query, a fragment or credentials', { code: 'config_error', status: 0 });
  }
  const f = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (typeof f !== 'function') {
    throw new ConfigError('no global fetch: Node 18 or later is required, or pass `fetch`', { code: 'config_error', status: 0 });
  }
  return {
    baseUrl: parsed.href.replace(/\/+$/, ''),
    token,
    retries: nonNegative(options.retries, DEFAULT_RETRIES, 'retries'),
    timeoutMs: nonNegative(options.timeoutMs, DEFAULT_TIMEOUT_MS, 'timeoutMs'),
    maxRetryDelayMs: nonNegative(options.maxRetryDelayMs, DEFAULT_MAX_RETRY_DELAY_MS, 'maxRetryDelayMs'),
    fetch: f,
    credentialKeyFor: options.credentialKeyFor ?? ((id: string) => id),
  };
}

function nonNegative(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < 0) {
    throw new ConfigError(`\`${name}\` must be a non-negative number`, { code: 'config_error', status: 0 });
  }
  return v;
}

/** The contract's request id alphabet, `[A-Za-z0-9._-]{1,64}`. */
export function newRequestId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  let s = 'sdk-';
  for (let i = 0; i < 20; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}

/**
 * JSON text of a value; `Set`s become arrays in tresor's set order (numbers first, ascending,
 * then strings by their UTF-8 bytes, without duplicates).
 */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (v instanceof Set ? setToArray(v) : v));
}

function setToArray(set: Set<unknown>): unknown[] {
  const nums = [...set].filter((x): x is number => typeof x === 'number').sort((a, b) => a - b);
  const strs = [...set].filter((x): x is string => typeof x === 'string').sort(compareUtf8);
  const rest = [...set].filter((x) => typeof x !== 'number' && typeof x !== 'string');
  return [...nums, ...strs, ...rest];
}

function compareUtf8(a: string, b: string): number {
  const ea = new TextEncoder().encode(a);
  const eb = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(ea.length, eb.length); i++) {
    if (ea[i] !== eb[i]) return ea[i]! - eb[i]!;
  }
  return ea.length - eb.length;
}

/** A key as one percent-encoded path segment; throws {@link InvalidRequestError} for keys the server would refuse and a URL cannot carry (empty, `.`, `..`). */
export function keySegment(key: string, what = 'key'): string {
  if (typeof key !== 'string') {
    throw new TypeError(`the ${what} must be a string`);
  }
  if (key === '' || key === '.' || key === '..') {
    throw new InvalidRequestError(`the ${what} ${JSON.stringify(key)} is not allowed (checked by the SDK; nothing was sent)`, {
      code: 'invalid_request',
      status: 400,
    });
  }
  return encodeURIComponent(key);
}

/** `fields=a,b`, or `undefined` for no (or an empty) list. */
export function fieldsParam(fields: readonly string[] | undefined): string | undefined {
  if (fields === undefined || fields.length === 0) return undefined;
  for (const f of fields) {
    if (typeof f !== 'string' || f === '' || f.includes(',')) {
      throw new InvalidRequestError(
        `the field name ${JSON.stringify(f)} cannot be sent (empty, or holding a comma; checked by the SDK; nothing was sent)`,
        { code: 'invalid_request', status: 400 },
      );
    }
  }
  return fields.map(encodeURIComponent).join(',');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function backoff(attempt: number): number {
  const base = Math.min(2000, 100 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  const secs = Number(value.trim());
  if (Number.isFinite(secs) && secs >= 0) return secs * 1000;
  const date = Date.parse(value);
  if (!Number.isNaN(date)) return Math.max(0, date - Date.now());
  return undefined;
}

/**
 * Sends requests for one configuration source. `config` is called once per call, so the
 * ready-made objects see `TRESOR_ADDR` and `TRESOR_TOKEN` as they are at call time.
 */
export class Transport {
  constructor(private readonly config: () => Resolved) {}

  /** The resolved configuration (throws {@link ConfigError}). */
  resolved(): Resolved {
    return this.config();
  }

  /** Sends; any non-2xx answer is thrown as its typed error. */
  async call(spec: RequestSpec): Promise<Answer> {
    const answer = await this.send(spec);
    if (answer.status >= 200 && answer.status < 300) return answer;
    throw this.error(answer, spec);
  }

  /** The typed error of a non-2xx answer. */
  error(answer: Answer, spec: RequestSpec): TresorError {
    return errorFromAnswer(answer.status, answer.body, answer.requestId, undefined, spec.what);
  }

  /**
   * Sends and returns the answer whatever its status. Retries, with the same request id:
   * - after a network failure, only when `spec.repeatable`;
   * - after 429 `rate_limited` or 503 `unavailable` carrying the contract's error body (the
   *   server did nothing), any request, waiting `Retry-After` when it is at most
   *   `maxRetryDelayMs`.
   */
  async send(spec: RequestSpec): Promise<Answer> {
    const cfg = this.config();
    const requestId = newRequestId();
    let url = cfg.baseUrl + spec.path;
    const q = Object.entries(spec.query ?? {}).filter(([, v]) => v !== undefined);
    if (q.length > 0) url += '?' + q.map(([k, v]) => `${k}=${v}`).join('&');
    const headers: Record<string, string> = {
      authorization: `Bearer ${cfg.token}`,
      'x-request-id': requestId,
      accept: 'application/json',
      ...spec.headers,
    };
    let body: string | undefined;
    if (spec.body !== undefined) {
      body = toJson(spec.body);
      headers['content-type'] = spec.contentType ?? 'application/json';
    }
    for (let attempt = 0; ; attempt++) {
      let status: number;
      let text: string;
      let answerHeaders: { get(name: string): string | null };
      try {
        const signal = cfg.timeoutMs > 0 ? AbortSignal.timeout(cfg.timeoutMs) : undefined;
        const res = await cfg.fetch(url, { method: spec.method, headers, body, redirect: 'manual', signal });
        status = res.status;
        answerHeaders = res.headers;
        text = spec.method === 'HEAD' ? '' : await res.text();
      } catch (cause) {
        if (spec.repeatable && attempt < cfg.retries) {
          await sleep(backoff(attempt));
          continue;
        }
        const reason = cause instanceof Error ? cause.message : String(cause);
        const detail = cause instanceof Error && cause.cause instanceof Error ? `: ${cause.cause.message}` : '';
        throw new NetworkError(
          `${spec.what}: no answer from tresor (${reason}${detail})` +
            (spec.repeatable ? '' : '; whether it took effect is unknown, and it was not retried'),
          { code: 'network_error', status: 0, requestId, cause },
        );
      }
      const answerId = answerHeaders.get('x-request-id') ?? requestId;
      let parsed: unknown;
      if (text !== '') {
        try {
          parsed = JSON.parse(text);
        } catch {
          if (status >= 200 && status < 300) {
            throw new UnexpectedResponseError(`${spec.what}: the answer is not JSON (HTTP ${status})`, {
              code: `http_${status}`,
              status,
              requestId: answerId,
            });
          }
          parsed = undefined;
        }
      }
      if (status === 429 || status === 503) {
        const err = contractError(parsed);
        const wait = retryAfterMs(answerHeaders.get('retry-after'));
        if (err && (err.code === 'rate_limited' || err.code === 'unavailable')) {
          const delay = wait ?? backoff(attempt);
          if (attempt < cfg.retries && delay <= cfg.maxRetryDelayMs) {
            await sleep(delay);
            continue;
          }
        }
        throw errorFromAnswer(status, parsed, answerId, wait === undefined ? undefined : Math.ceil(wait / 1000), spec.what);
      }
      if (status >= 300 && status < 400) {
        throw new UnexpectedResponseError(`${spec.what}: tresor answered a redirect (HTTP ${status}), which the SDK does not follow`, {
          code: `http_${status}`,
          status,
          requestId: answerId,
        });
      }
      return { status, body: parsed, requestId: answerId, etag: answerHeaders.get('etag') };
    }
  }
}

/** Wraps any thrown value as a {@link TresorError} check. */
export function isTresorError(e: unknown): e is TresorError {
  return e instanceof TresorError;
}
