// An OCP app (Optimizely Connect Platform), written against `@zaiusinc/app-sdk`'s `storage`.
// The only change to run it on tresor is the import below; on OCP it reads:
//
//   import {storage, ValueHash} from '@zaiusinc/app-sdk';
//
// It authenticates with a vendor and caches the token in the secrets store (the seed's
// `Vendor`), keeps the settings form's data in the settings store, counts API cost per hour
// with the callback form of `patch`, queues webhook events in the key-value store, and maps
// the vendor's account id to this installation in the shared key-value store.
import {storage, ValueHash} from '@tresor/sdk';

export interface Credentials extends ValueHash {
  client_id: string;
  client_secret: string;
}

export interface UToken extends ValueHash {
  token?: string;
  issued?: number;
}

interface AuthResult {
  access_token: string;
  token_type: 'bearer';
}

interface TokenRateLimit extends ValueHash {
  counter: number;
  hour: number;
}

export interface WebhookEvent extends ValueHash {
  id: string;
  type: string;
}

export class Vendor {
  public constructor(private tokenUrl: string) {}

  /**
   * Authenticate with a Vendor API and get an auth token for future API calls
   * @param credentials
   * @param force true if we should discard the existing token and ask for a new one
   */
  public async authenticate(credentials: Credentials, force = false): Promise<string> {
    // Sometimes we will want to get a fresh token (credentials changed)
    if (!force) {
      const uToken = await storage.secrets.get<UToken>('utoken');
      if (uToken.token && !this.isExpiring(uToken)) {
        // we already have a valid token saved, use it
        return uToken.token;
      }
    }

    const result = await fetch(this.tokenUrl, {
      method: 'POST',
      body: JSON.stringify({...credentials, grant_type: 'client_credentials'}),
      headers: {'Content-Type': 'application/json'}
    });

    if (result.status === 200) {
      const token = (await result.json() as AuthResult).access_token;
      await storage.secrets.put<UToken>('utoken', {token, issued: new Date().getTime()});
      return token;
    } else {
      const body = await result.json() as {status?: {message?: string}};
      throw new Error(body.status && body.status.message || 'Unable to authorize with Vendor');
    }
  }

  private isExpiring(token: UToken) {
    return !token.issued || new Date().getTime() - token.issued > 7 * 86400 * 1000;
  }
}

/** The settings form was saved. */
export async function onSettingsSaved(form: Credentials): Promise<void> {
  await storage.settings.put<Credentials>('credentials', form);
}

/** A job step: authenticate (cached) and account for the call's cost in this hour's window. */
export async function callVendor(vendor: Vendor, apiCallCost: number, currentHour: number): Promise<string> {
  const credentials = await storage.settings.get<Credentials>('credentials');
  const token = await vendor.authenticate(credentials);
  await storage.secrets.patch<TokenRateLimit>('rate', (value) => {
    if (value.hour !== currentHour) {
      value.hour = currentHour;
      value.counter = 0;
    }
    value.counter += apiCallCost;
    // return the new value to set based on the previous value
    return value;
  });
  return token;
}

/** The cost spent in the current window. */
export async function spent(): Promise<number> {
  return (await storage.secrets.get<TokenRateLimit>('rate')).counter ?? 0;
}

/** A webhook arrived: queue it for the next job run (kept a day at most) and count it. */
export async function onWebhook(event: WebhookEvent, vendorAccountId: string): Promise<void> {
  await storage.kvStore.append<WebhookEvent>('webhooks', 'queue', event, {ttl: 86400});
  await storage.kvStore.increment('webhooks', 'received');
  await storage.kvStore.addString('webhooks', 'types', event.type);
  await storage.sharedKvStore.patch('vendor-accounts', {[vendorAccountId]: 'this-installation'});
}

/** A job run: take up to `max` queued events. */
export async function drainWebhooks(max: number): Promise<WebhookEvent[]> {
  const batch = await storage.kvStore.shiftMulti<WebhookEvent>('webhooks', {queue: max});
  return batch.queue;
}

/** The app is disconnected from the vendor. */
export async function disconnect(): Promise<boolean> {
  const had = await storage.secrets.exists('utoken');
  await storage.secrets.delete('utoken');
  await storage.settings.delete('credentials', ['client_secret']);
  return had;
}
