// An applet's handlers, written against the applet platform's `ctx.sdk` (credentials, OAuth,
// authenticated HTTP). The handlers are unchanged: the host still passes `ctx`, and on tresor
// `ctx.sdk` is this SDK's `sdk`. The only change is where the context's type comes from; on the
// platform it is the platform's own applet types package.
import type { AppletContext } from '@tresor/sdk';

type Ctx = AppletContext;

const RETURN_TO = 'https://app.example.com/settings/shopify';

/** Settings page, "Connect your shop": start the OAuth flow and send the browser to the provider. */
export async function connectShop(ctx: Ctx, resourceId: string): Promise<{ redirectTo: string; flowId: string }> {
  const flow = await ctx.sdk.oauth.startAuthCodeFlow({
    provider: 'shopify',
    storeAs: {
      source: 'websiteCredential',
      key: `shopify:${resourceId}`, // bundle owns naming
      provider: 'shopify', // optional tag
    },
    scopes: ['read_products'],
    returnTo: `${RETURN_TO}/done`,
  });
  return { redirectTo: flow.authorizeUrl, flowId: flow.flowId };
}

/** The browser came back: finish the setup. */
export async function finishConnect(ctx: Ctx, flowId: string): Promise<{ connected: boolean; scopes: string[] }> {
  const result = await ctx.sdk.oauth.completeAuthCodeFlow({ flowId });
  // result.accessToken is returned ONCE for setup; do not retain it.
  return { connected: result.credential.needsReconsent === false, scopes: result.credential.scopes };
}

/** A page of the applet: show the shop. */
export async function shopName(ctx: Ctx, resourceId: string): Promise<string> {
  // After this, the bundle should NOT hold accessToken. Read via
  // requestAuthed instead, which pulls fresh from the credential store
  // on every request.
  const res = await ctx.sdk.http.requestAuthed({
    resourceId,
    method: 'GET',
    path: 'shop.json',
  });
  if (res.status !== 200) throw new Error(`shop.json answered ${res.status}`);
  return (res.body as { shop: { name: string } }).shop.name;
}

/** Settings page: which shops are connected (metadata only; secrets are never readable). */
export async function connections(ctx: Ctx): Promise<{ key: string; provider: string; needsReconsent: boolean }[]> {
  const all = await ctx.sdk.credentials.list();
  return all
    .filter((c) => c.key.startsWith('shopify:'))
    .map((c) => ({ key: c.key, provider: c.provider, needsReconsent: c.needsReconsent }));
}

/** A shop that uses an API key instead of OAuth: store it; the applet never reads it back. */
export async function saveApiKey(ctx: Ctx, resourceId: string, apiKey: string): Promise<string> {
  const meta = await ctx.sdk.credentials.store({
    key: `shopify:${resourceId}`,
    provider: 'shopify-keys',
    secret: { api_key: apiKey },
    metadata: { addedBy: 'settings-page' },
  });
  const check = await ctx.sdk.credentials.getMetadata(meta.key);
  return `${check?.kind} for ${check?.provider}`;
}
