/**
 * Every error the SDK throws is a {@link TresorError}: the contract's error `code`, the HTTP
 * `status` (0 when no answer came back), and the `requestId` of the request (the server's
 * `X-Request-Id`, or the one the SDK sent when no answer came back). Messages never carry a
 * token, a stored value or a credential secret.
 */

/** Base class of every error the SDK throws. */
export class TresorError extends Error {
  /** The contract's error code (`not_found`, `precondition_failed`, …), `network_error` or `config_error`. */
  readonly code: string;
  /** The HTTP status of the answer; 0 when there was none (network failure, configuration, a check made by the SDK). */
  readonly status: number;
  /** The request id: the server's `X-Request-Id`, or the id the SDK sent. */
  readonly requestId: string | undefined;
  /** In a failed atomic batch, the index of the op that failed. */
  readonly opIndex: number | undefined;
  /** Seconds the server asked to wait (`Retry-After`), on 429 and 503. */
  readonly retryAfter: number | undefined;

  constructor(
    message: string,
    init: { code: string; status: number; requestId?: string; opIndex?: number; retryAfter?: number; cause?: unknown },
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status;
    this.requestId = init.requestId;
    this.opIndex = init.opIndex;
    this.retryAfter = init.retryAfter;
  }
}

/** 400 `invalid_request`: malformed JSON, bad key, bad field, unknown field or query parameter. Also thrown before sending for keys the SDK can tell are invalid (empty, `.`, `..`). */
export class InvalidRequestError extends TresorError {}
/** 401 `unauthenticated`: missing, unknown, expired or revoked token. */
export class UnauthenticatedError extends TresorError {}
/** 403 `forbidden`: the token lacks the scope (the message names it), or is the wrong kind of token. */
export class ForbiddenError extends TresorError {}
/** 403 `quota_exceeded`: an operator-configured storage quota is full. */
export class QuotaExceededError extends TresorError {}
/** 403 `destination_forbidden`: the proxy refuses the destination. */
export class DestinationForbiddenError extends TresorError {}
/** 404 `not_found`: no such key (or it expired), or an unknown route. */
export class NotFoundError extends TresorError {}
/** 405 `method_not_allowed`. */
export class MethodNotAllowedError extends TresorError {}
/** 409 `conflict`: the operation does not fit the stored value (e.g. a list op on a non-list), a pending OAuth flow, an owner clash. */
export class ConflictError extends TresorError {}
/** 409 `reconsent_required`: the credential's grant was revoked; run the OAuth flow again. */
export class ReconsentRequiredError extends TresorError {}
/** 410 `gone`: a one-time result already taken (or an expired OAuth flow). */
export class GoneError extends TresorError {}
/** 412 `precondition_failed`: `If-Match` / `If-None-Match` / `if_version` did not hold (e.g. `keyPolicy: 'FAIL_IF_EXISTS'` on an existing key). */
export class PreconditionFailedError extends TresorError {}
/** 413 `payload_too_large`: a value, key, description or request over its limit. */
export class PayloadTooLargeError extends TresorError {}
/** 415 `unsupported_media_type`. */
export class UnsupportedMediaTypeError extends TresorError {}
/** 429 `rate_limited`: see {@link TresorError.retryAfter}. */
export class RateLimitedError extends TresorError {}
/** 500 `internal`: a bug in the server. */
export class InternalError extends TresorError {}
/** 501 `not_implemented`: a route of a later release. */
export class NotImplementedError extends TresorError {}
/** 502 `upstream_failed`: the proxy could not reach the provider, timed out, or the answer was too large. */
export class UpstreamFailedError extends TresorError {}
/** 503 `unavailable`: storage unreachable or shutting down; nothing was written. */
export class UnavailableError extends TresorError {}
/** 507 `insufficient_storage`: the disk is full; nothing was written. */
export class InsufficientStorageError extends TresorError {}
/**
 * No answer came back: the connection failed or broke, or the request timed out
 * (`code` is `network_error`, `status` 0). Whether a write took effect is unknown; see the
 * retry rule in the README.
 */
export class NetworkError extends TresorError {}
/** The SDK is not configured: no token, or a bad URL (`code` is `config_error`). */
export class ConfigError extends TresorError {}
/** An answer that is not the contract's (a proxy in front of tresor, a redirect, a body that is not JSON). */
export class UnexpectedResponseError extends TresorError {}

type ErrorClass = new (message: string, init: ConstructorParameters<typeof TresorError>[1]) => TresorError;

const BY_CODE: Record<string, ErrorClass> = {
  invalid_request: InvalidRequestError,
  unauthenticated: UnauthenticatedError,
  forbidden: ForbiddenError,
  quota_exceeded: QuotaExceededError,
  destination_forbidden: DestinationForbiddenError,
  not_found: NotFoundError,
  method_not_allowed: MethodNotAllowedError,
  conflict: ConflictError,
  reconsent_required: ReconsentRequiredError,
  gone: GoneError,
  precondition_failed: PreconditionFailedError,
  payload_too_large: PayloadTooLargeError,
  unsupported_media_type: UnsupportedMediaTypeError,
  rate_limited: RateLimitedError,
  internal: InternalError,
  not_implemented: NotImplementedError,
  upstream_failed: UpstreamFailedError,
  unavailable: UnavailableError,
  insufficient_storage: InsufficientStorageError,
};

/** The code a bare status stands for (HEAD answers carry no body); ambiguous statuses take the table's first code. */
const BY_STATUS: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthenticated',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  409: 'conflict',
  410: 'gone',
  412: 'precondition_failed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  500: 'internal',
  501: 'not_implemented',
  502: 'upstream_failed',
  503: 'unavailable',
  507: 'insufficient_storage',
};

/** The error of a non-2xx answer. `body` is the parsed JSON body, if any. */
export function errorFromAnswer(
  status: number,
  body: unknown,
  requestId: string | undefined,
  retryAfter: number | undefined,
  what: string,
): TresorError {
  const err = contractError(body);
  if (err) {
    const cls = BY_CODE[err.code] ?? TresorError;
    return new cls(err.message || `${what}: ${err.code}`, {
      code: err.code,
      status,
      requestId: err.requestId ?? requestId,
      opIndex: err.opIndex,
      retryAfter,
    });
  }
  const code = BY_STATUS[status];
  if (code) {
    const cls = BY_CODE[code] ?? TresorError;
    return new cls(`${what}: HTTP ${status}`, { code, status, requestId, retryAfter });
  }
  return new UnexpectedResponseError(`${what}: unexpected HTTP ${status}`, {
    code: `http_${status}`,
    status,
    requestId,
    retryAfter,
  });
}

/** The contract's error body `{"error": {"code", "message", "request_id"}, "op_index"?}`, if `body` is one. */
export function contractError(
  body: unknown,
): { code: string; message: string; requestId?: string; opIndex?: number } | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const outer = body as Record<string, unknown>;
  const e = outer.error;
  if (typeof e !== 'object' || e === null) return undefined;
  const inner = e as Record<string, unknown>;
  if (typeof inner.code !== 'string') return undefined;
  const opIndex = typeof outer.op_index === 'number' ? outer.op_index : typeof inner.op_index === 'number' ? inner.op_index : undefined;
  return {
    code: inner.code,
    message: typeof inner.message === 'string' ? inner.message : '',
    requestId: typeof inner.request_id === 'string' ? inner.request_id : undefined,
    opIndex,
  };
}
