// Where the page sends its requests and with which key. No DOM here except `history` and
// `localStorage` in the functions that say so, so the rules run (and are tested) in Node.
//
// The rule: a key is saved for one API origin and sent only there. A link can point the page
// at another API (`?api=`, `?provider=`, `?endpoint=`), but the page asks before using it, and
// even then sends that origin only a key saved for it or given with the link itself.

export const STORAGE_KEY = "maskpaint.page.settings";
/** The origin of RunPod's hosted API (a RunPod endpoint without a base URL). */
export const RUNPOD_ORIGIN = "https://api.runpod.ai";

/**
 * The origin requests go to with these settings, or null when the URL is unusable (only
 * http: and https: count).
 *
 * @param {{provider: string, api: string}} s
 * @param {string} [fallback] a web API with no URL set talks to this (default: the page's origin)
 */
export function apiOrigin(s, fallback = globalThis.location?.origin) {
  if (s.provider === "runpod" && !s.api) return RUNPOD_ORIGIN;
  try {
    const u = new URL(s.api || fallback);
    return u.protocol === "https:" || u.protocol === "http:" ? u.origin : null;
  } catch {
    return null;
  }
}

/** The key saved for the origin these settings talk to ("" when none). */
export function tokenFor(saved, s) {
  const origin = apiOrigin(s);
  return (origin && saved.tokens?.[origin]) || "";
}

/** `url` when it is http(s) (resolved against the page), else null: never a javascript: link. */
export function safeHttpUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const u = new URL(url, typeof location === "undefined" ? undefined : location.href);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch {
    return null;
  }
}

/**
 * The saved settings `{provider, api, endpoint, tokens: {origin: key}}` from localStorage. An
 * older entry with one `token` has it bound to the origin it was saved with.
 */
export function readSaved(storage = globalThis.localStorage) {
  let raw = {};
  try { raw = JSON.parse(storage?.getItem(STORAGE_KEY) ?? "{}") ?? {}; } catch { /* private mode, junk */ }
  const out = {
    provider: raw.provider === "runpod" ? "runpod" : raw.provider === "web" ? "web" : undefined,
    api: typeof raw.api === "string" ? raw.api : undefined,
    endpoint: typeof raw.endpoint === "string" ? raw.endpoint : undefined,
    tokens: {},
  };
  if (raw.tokens && typeof raw.tokens === "object") {
    for (const [k, v] of Object.entries(raw.tokens)) if (typeof v === "string") out.tokens[k] = v;
  }
  if (typeof raw.token === "string" && raw.token) {
    const origin = apiOrigin({ provider: out.provider ?? "web", api: out.api ?? "" });
    if (origin && !(origin in out.tokens)) out.tokens[origin] = raw.token;
  }
  return out;
}

export function writeSaved(saved, storage = globalThis.localStorage) {
  const { provider, api, endpoint, tokens } = saved;
  try { storage?.setItem(STORAGE_KEY, JSON.stringify({ provider, api, endpoint, tokens })); } catch { /* private mode */ }
}

/**
 * Remove `?token=` from the address bar and from this history entry at once (a token in a
 * URL ends up in screenshots, shared links and the history); returns its value or null.
 */
export function stripTokenFromAddress(loc = location, hist = history) {
  const q = new URLSearchParams(loc.search);
  if (!q.has("token")) return null;
  const token = q.get("token");
  q.delete("token");
  hist.replaceState(hist.state, "", `${loc.pathname}${q.size ? `?${q}` : ""}${loc.hash}`);
  return token;
}

/**
 * What to use now, given the saved settings and the link's query.
 *
 * - No API in the link: the saved settings (or the page's own origin for the web API); a
 *   bare `?token=` is accepted only when they talk to the page's own origin.
 * - A link to the same origin as those: used at once (`accepted`), with the link's token.
 * - A link to another origin: `pending` (ask first); until then the saved settings stay.
 *
 * @param {object} saved readSaved()
 * @param {URLSearchParams} query the page's query (without token)
 * @param {string|null} linkToken the `?token=` that came with the link
 * @param {{origin: string, protocol: string}} loc the page's location
 * @returns {{settings: {provider, api, endpoint}, accepted: boolean, pending: null|{settings, token}}}
 */
export function linkChoice(saved, query, linkToken, loc) {
  const own = loc.protocol === "http:" || loc.protocol === "https:" ? loc.origin : "";
  const provider = saved.provider ?? "web";
  const base = { provider, api: saved.api ?? (provider === "web" ? own : ""), endpoint: saved.endpoint ?? "" };
  const has = (k) => query.has(k);
  if (!has("api") && !has("provider") && !has("endpoint")) {
    // a bare ?token= is for the server that serves this page (`make serve` prints such a link)
    return { settings: base, accepted: linkToken !== null && apiOrigin(base) === own, pending: null };
  }
  const lp = has("provider") ? (query.get("provider") === "runpod" ? "runpod" : "web") : base.provider;
  const sameKind = lp === base.provider;
  const cand = {
    provider: lp,
    api: has("api") ? query.get("api").trim() : sameKind ? base.api : lp === "web" ? own : "",
    endpoint: has("endpoint") ? query.get("endpoint").trim() : sameKind ? base.endpoint : "",
  };
  const origin = apiOrigin(cand);
  if (origin && origin === apiOrigin(base)) return { settings: cand, accepted: true, pending: null };
  return { settings: base, accepted: false, pending: origin ? { settings: cand, token: linkToken } : null };
}
