/** The header carrying a web API webhook's signature: `sha256=<hex HMAC-SHA256 of the raw body>`. */
export const WEBHOOK_SIGNATURE_HEADER = "X-Maskpaint-Signature";

const encoder = new TextEncoder();

function toBytes(data: string | ArrayBuffer | Uint8Array): Uint8Array<ArrayBuffer> {
  if (typeof data === "string") return encoder.encode(data);
  return new Uint8Array(data instanceof Uint8Array ? data : new Uint8Array(data)); // a copy, on an ArrayBuffer
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> | null {
  if (!/^(?:[0-9a-f]{2})+$/i.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Check a webhook delivery of the maskpaint web API (Modal or local): true when
 * `signatureHeader` (the `X-Maskpaint-Signature` value, `sha256=<hex>`) is the HMAC-SHA256 of
 * the exact raw `body` under `secret` (the server's `MASKPAINT_WEBHOOK_SECRET`).
 *
 * Pass the body as received (text or bytes), before any JSON parsing. WebCrypto only
 * (`crypto.subtle`, constant-time `verify`): Cloudflare Workers, Next.js, Node 20+. Never throws
 * for a bad or missing header (returns false). Deliveries may repeat: dedupe on the body's `id`.
 */
export async function verifyWebhook(
  body: string | ArrayBuffer | Uint8Array,
  signatureHeader: string | null | undefined,
  secret: string,
): Promise<boolean> {
  if (!secret || typeof signatureHeader !== "string") return false;
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(signatureHeader.trim());
  const expected = match?.[1] ? fromHex(match[1]) : null;
  if (!expected) return false;
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return crypto.subtle.verify("HMAC", key, expected, toBytes(body));
}
