/** The header carrying a web API webhook's signature: `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`. */
export const WEBHOOK_SIGNATURE_HEADER = "X-Maskpaint-Signature";
/** The header carrying the Unix time (s) at which the delivery was signed. */
export const WEBHOOK_TIMESTAMP_HEADER = "X-Maskpaint-Timestamp";
/** Default age (or clock skew) beyond which a delivery is refused, seconds: 5 minutes. */
export const WEBHOOK_TOLERANCE_S = 300;

/** Options of {@link verifyWebhook}. */
export interface VerifyWebhookOptions {
  /** Largest accepted |now - timestamp|, seconds (default {@link WEBHOOK_TOLERANCE_S}). */
  toleranceS?: number;
  /** The current time, ms since the epoch (default `Date.now()`; for tests). */
  nowMs?: number;
}

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
 * `"<timestampHeader>." + body` under `secret` (the server's `MASKPAINT_WEBHOOK_SECRET`), and
 * `timestampHeader` (the `X-Maskpaint-Timestamp` value, Unix seconds) is within
 * `opts.toleranceS` (default 5 min) of now: a captured delivery cannot be replayed later.
 *
 * Pass the body as received (text or bytes), before any JSON parsing. WebCrypto only
 * (`crypto.subtle`, constant-time `verify`): Cloudflare Workers, Next.js, Node 20+. Never throws
 * for a bad or missing header (returns false). Deliveries may repeat: dedupe on the body's `id`.
 */
export async function verifyWebhook(
  body: string | ArrayBuffer | Uint8Array,
  signatureHeader: string | null | undefined,
  secret: string,
  timestampHeader: string | null | undefined,
  opts: VerifyWebhookOptions = {},
): Promise<boolean> {
  if (!secret || typeof signatureHeader !== "string" || typeof timestampHeader !== "string") return false;
  const stamp = timestampHeader.trim();
  if (!/^[0-9]{1,12}$/.test(stamp)) return false;
  const tolerance = opts.toleranceS ?? WEBHOOK_TOLERANCE_S;
  const now = (opts.nowMs ?? Date.now()) / 1000;
  if (!Number.isFinite(tolerance) || !(Math.abs(now - Number(stamp)) <= tolerance)) return false;
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(signatureHeader.trim());
  const expected = match?.[1] ? fromHex(match[1]) : null;
  if (!expected) return false;
  const prefix = encoder.encode(`${stamp}.`);
  const raw = toBytes(body);
  const signed = new Uint8Array(prefix.length + raw.length);
  signed.set(prefix, 0);
  signed.set(raw, prefix.length);
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return crypto.subtle.verify("HMAC", key, expected, signed);
}
