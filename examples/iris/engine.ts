// Stand-ins for the workflow engine's other built-ins (`Log`, `CancelAction`,
// `InvokeRestMethod`), so that the script next to this file reads as it does in the engine.
// Only SetSecret and GetSecret come from the SDK.

export interface RestResponse {
  statusCode: number;
  content: any;
}

export const logs: string[] = [];

export function Log(level: string, message: string): void {
  logs.push(`${level}: ${message}`);
}

export class ActionCancelled extends Error {}

export function CancelAction(reason: string): never {
  throw new ActionCancelled(reason);
}

export async function InvokeRestMethod(
  url: string,
  method: string,
  headers: Record<string, string>,
  body: unknown,
): Promise<RestResponse> {
  const res = await fetch(url, {
    method,
    headers,
    body: body === null || body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let content: unknown = text;
  try {
    content = JSON.parse(text);
  } catch {
    // not JSON: the text
  }
  return { statusCode: res.status, content };
}
