// A static file server for the browser tests and the screenshot (node:http only).
//
// Hand-written because ES modules do not load from file:// URLs in Chromium, and the tests
// must not depend on a server package or on the Python side; it serves GET/HEAD of files
// under `root` plus a few fixed `mounts` (URL path -> file), nothing else.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
  ".json": "application/json", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
  ".webp": "image/webp", ".svg": "image/svg+xml", ".map": "application/json",
};

/**
 * Serve `root` (and `mounts`) on 127.0.0.1 at a free port.
 * @param {string} root directory served at "/"
 * @param {Record<string,string>} [mounts] URL path (e.g. "/__fixtures/photo.jpg") -> file path
 * @returns {Promise<{url: string, close: () => Promise<void>}>}
 */
export function serveStatic(root, mounts = {}) {
  const base = path.resolve(root);
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, "http://x").pathname);
    let file = mounts[urlPath];
    if (!file) {
      file = path.join(base, path.normalize(urlPath));
      if (!file.startsWith(base)) { res.writeHead(403).end(); return; }
      if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, "index.html");
    }
    if (req.method !== "GET" && req.method !== "HEAD") { res.writeHead(405).end(); return; }
    fs.readFile(file, (err, body) => {
      if (err) { res.writeHead(404, { "content-type": "text/plain" }).end("not found"); return; }
      res.writeHead(200, { "content-type": TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream", "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}
