/**
 * @tresor/sdk — tresor's storage, credentials and secrets with the shapes of the platforms apps
 * were written for: OCP (`storage.secrets`, `storage.settings`, `storage.kvStore`,
 * `storage.sharedKvStore`), Forge (`storage.setSecret`, `kvs`), the applet platform (`sdk`) and
 * the workflow engine (`SetSecret`, `GetSecret`, `DeleteSecret`).
 *
 * `createStorage({ url, token })` builds them for one installation token; the ready-made
 * `storage`, `kvs`, `sdk` and the three functions read `TRESOR_ADDR` and `TRESOR_TOKEN` at each
 * call (or what {@link configure} set).
 */

import { batch, forgeSecrets, type ForgeSecrets, type Kvs } from './forge.js';
import { irisSecrets, type IrisSecrets } from './iris.js';
import { OcpKvStore, OcpStore, type OcpStorage } from './ocp.js';
import { Records } from './records.js';
import { createSdk, type Sdk } from './rightplace.js';
import { Transport, resolve, type Resolved } from './transport.js';
import type { StorageOptions } from './types.js';

export {
  ConfigError,
  ConflictError,
  DestinationForbiddenError,
  ForbiddenError,
  GoneError,
  InsufficientStorageError,
  InternalError,
  InvalidRequestError,
  MethodNotAllowedError,
  NetworkError,
  NotFoundError,
  NotImplementedError,
  PayloadTooLargeError,
  PreconditionFailedError,
  QuotaExceededError,
  RateLimitedError,
  ReconsentRequiredError,
  TresorError,
  UnauthenticatedError,
  UnavailableError,
  UnexpectedResponseError,
  UnsupportedMediaTypeError,
  UpstreamFailedError,
} from './errors.js';
export type * from './types.js';
export type { BatchOp, BatchResult, ForgeSecrets, Kvs, SecretValue, SetSecretOptions } from './forge.js';
export type { IrisSecrets } from './iris.js';
export { NumberSet, OcpKvStore, OcpStore, StringSet } from './ocp.js';
export type { KVRowOptions, OcpStorage, PatchUpdater } from './ocp.js';
export type {
  AppletContext,
  AuthCodeFlow,
  AuthCodeFlowStatus,
  AuthedResponse,
  CompletedAuthCodeFlow,
  CredentialMetadata,
  CredentialOwner,
  RequestAuthedInput,
  Sdk,
  StartAuthCodeFlowInput,
  StoreAs,
  StoreCredentialInput,
} from './rightplace.js';
export { DEFAULT_URL } from './transport.js';
export { UPDATE_ATTEMPTS } from './records.js';

/** The `storage` object: OCP's four stores and Forge's three secret calls. */
export type Storage = OcpStorage & ForgeSecrets;

/** Every surface for one configuration. */
export interface Tresor extends IrisSecrets {
  /** OCP's `storage` (secrets, settings, kvStore, sharedKvStore) and Forge's `storage.setSecret` / `getSecret` / `deleteSecret`. */
  storage: Storage;
  /** Forge's `kvs`: the secret calls and `batch`. */
  kvs: Kvs;
  /** The applet platform's `sdk`: credentials, http, oauth. */
  sdk: Sdk;
}

function build(config: () => Resolved): Tresor {
  const t = new Transport(config);
  const secrets = new Records(t, 'secrets');
  const forge = forgeSecrets(secrets);
  const storage: Storage = {
    secrets: new OcpStore(secrets),
    settings: new OcpStore(new Records(t, 'settings')),
    kvStore: new OcpKvStore(new Records(t, 'kv')),
    sharedKvStore: new OcpKvStore(new Records(t, 'shared')),
    ...forge,
  };
  const kvs: Kvs = { ...forgeSecrets(secrets), batch: batch(t) };
  return { storage, kvs, sdk: createSdk(t), ...irisSecrets(secrets) };
}

/**
 * Every surface over one tresor server and one installation token. `url` defaults to
 * `TRESOR_ADDR` (else `http://127.0.0.1:8200`) and `token` to `TRESOR_TOKEN`, both read now;
 * a missing token throws `ConfigError`.
 *
 * ```ts
 * const { storage, kvs, sdk } = createStorage({ url: 'https://tresor.internal:8200', token });
 * ```
 */
export function createStorage(options: StorageOptions = {}): Tresor {
  const resolved = resolve(options);
  return build(() => resolved);
}

let defaults: StorageOptions = {};

/**
 * Sets options of the ready-made objects (`storage`, `kvs`, `sdk`, `SetSecret`, …), e.g. the
 * applet platform's `credentialKeyFor`. Options not given keep following `TRESOR_ADDR` and
 * `TRESOR_TOKEN`. Each call replaces the previous settings.
 */
export function configure(options: StorageOptions): void {
  defaults = { ...options };
}

const ready = build(() => resolve(defaults));

/** OCP's `storage` and Forge's `storage`, configured from `TRESOR_ADDR` and `TRESOR_TOKEN` at each call. */
export const storage: Storage = ready.storage;
/** Forge's `kvs`, configured from the environment at each call. */
export const kvs: Kvs = ready.kvs;
/** The applet platform's `sdk`, configured from the environment at each call. */
export const sdk: Sdk = ready.sdk;
/** The workflow engine's `SetSecret`, configured from the environment at each call. */
export const SetSecret: IrisSecrets['SetSecret'] = ready.SetSecret;
/** The workflow engine's `GetSecret`, configured from the environment at each call. */
export const GetSecret: IrisSecrets['GetSecret'] = ready.GetSecret;
/** The workflow engine's `DeleteSecret`, configured from the environment at each call. */
export const DeleteSecret: IrisSecrets['DeleteSecret'] = ready.DeleteSecret;
