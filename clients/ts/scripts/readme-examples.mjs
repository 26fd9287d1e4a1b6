// The TypeScript examples of README.md and docs/*.md are the files under examples/
// (type-checked by `npm run typecheck:examples`, built and run by tests/test_ts_examples.py).
// Each block follows a marker `<!-- example: clients/ts/examples/<name>.ts -->` (```ts or
// ```tsx).
//
//   node scripts/readme-examples.mjs          write the docs' blocks into examples/
//   node scripts/readme-examples.mjs --check  fail when a file and its block differ
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ts = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(ts, "..", "..");
const docsDir = join(repo, "docs");
const docs = ["README.md", ...(existsSync(docsDir) ? readdirSync(docsDir).filter((f) => f.endsWith(".md")).sort().map((f) => `docs/${f}`) : [])];
const re = /<!-- example: (\S+) -->\n```tsx?\n([\s\S]*?)```\n/g;
const blocks = docs.flatMap((doc) => [...readFileSync(join(repo, doc), "utf8").matchAll(re)].map((m) => [doc, m[1], m[2]]));
if (blocks.length === 0) {
  console.error("README.md and docs/*.md have no `<!-- example: ... -->` blocks");
  process.exit(1);
}
const seen = new Map();
let stale = 0;
for (const [doc, path, code] of blocks) {
  if (seen.has(path)) throw new Error(`${path} is the example of both ${seen.get(path)} and ${doc}: keep one block per file`);
  seen.set(path, doc);
  const file = join(repo, path);
  if (!relative(join(ts, "examples"), file).match(/^[\w.-]+$/)) throw new Error(`bad example path ${path}`);
  if (process.argv.includes("--check")) {
    let have = "";
    try {
      have = readFileSync(file, "utf8");
    } catch {}
    if (have !== code) {
      console.error(`${path} differs from its block in ${doc}: run npm run examples:write`);
      stale++;
    }
  } else {
    writeFileSync(file, code);
    console.log(`wrote ${path}`);
  }
}
process.exit(stale ? 1 : 0);
