// A Forge app's functions, written against Forge's secret storage. The only change to run it on
// tresor is the import below; on Forge it reads:
//
//   import { storage } from '@forge/api';
//   import { kvs } from '@forge/kvs';
//
// The admin page stores the third-party API token with `storage.setSecret`; a web trigger
// checks the signature of incoming webhooks with a secret that `kvs` keeps and rotates;
// uninstalling the integration deletes both.
import { storage, kvs } from '@tresor/sdk';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

interface WebhookSecret {
  current: string;
  previous: string | null;
  rotatedAt: string;
}

/** Resolver of the admin page: save the token the admin pasted. */
export async function saveApiToken(payload: { token: string; siteUrl: string }): Promise<{ saved: true }> {
  await storage.setSecret('api-token', { token: payload.token, siteUrl: payload.siteUrl });
  return { saved: true };
}

/** Resolver of the admin page: is the integration configured? (Never sends the token to the UI.) */
export async function getStatus(): Promise<{ configured: boolean; siteUrl?: string }> {
  const stored = await storage.getSecret('api-token');
  if (stored === undefined) return { configured: false };
  return { configured: true, siteUrl: stored.siteUrl };
}

/** Scheduled trigger: rotate the webhook signing secret, keeping the previous one for a grace period. */
export async function rotateWebhookSecret(): Promise<string> {
  const old: WebhookSecret | undefined = await kvs.getSecret('webhook-secret');
  const next: WebhookSecret = {
    current: randomBytes(32).toString('hex'),
    previous: old ? old.current : null,
    rotatedAt: new Date().toISOString(),
  };
  await kvs.setSecret('webhook-secret', next);
  return next.current;
}

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

/** Web trigger: accept a webhook only if it is signed with the current or the previous secret. */
export async function webhook(event: { body: string; headers: Record<string, string[]> }): Promise<{ statusCode: number }> {
  const secret: WebhookSecret | undefined = await kvs.getSecret('webhook-secret');
  const signature = event.headers['x-signature']?.[0] ?? '';
  const valid = [secret?.current, secret?.previous].some((s) => {
    if (!s) return false;
    const expected = Buffer.from(sign(s, event.body));
    const given = Buffer.from(signature);
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
  return { statusCode: valid ? 204 : 401 };
}

/** Product event "app uninstalled from this project": forget everything. */
export async function disconnect(): Promise<void> {
  await storage.deleteSecret('api-token');
  await kvs.deleteSecret('webhook-secret');
}

