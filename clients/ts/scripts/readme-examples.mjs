// The TypeScript examples of README.md and docs/*.md are the files under examples/ (type-checked
// by `npm run typecheck:examples`, built and run by tests/test_ts_examples.py). Each block follows
// a marker `<!-- example: clients/ts/examples/<name>.ts -->`.
//
//   node scripts/readme-examples.mjs          write the docs' blocks into examples/
//   node scripts/readme-examples.mjs --check  fail when a file and its block differ
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ts = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(ts, "..", "..");
const pages = ["README.md", ...readdirSync(join(repo, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => join("docs", f))];
const re = /<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```\n/g;
const blocks = pages.flatMap((page) => [...readFileSync(join(repo, page), "utf8").matchAll(re)].map((m) => [...m, page]));
if (blocks.length === 0) {
  console.error("README.md and docs/*.md have no `<!-- example: ... -->` blocks");
  process.exit(1);
}
let stale = 0;
for (const [, path, code, page] of blocks) {
  const file = join(repo, path);
  if (!relative(join(ts, "examples"), file).match(/^[\w.-]+$/)) throw new Error(`bad example path ${path}`);
  if (process.argv.includes("--check")) {
    let have = "";
    try {
      have = readFileSync(file, "utf8");
    } catch {}
    if (have !== code) {
      console.error(`${path} differs from its block in ${page}: run npm run examples:write`);
      stale++;
    }
  } else {
    writeFileSync(file, code);
    console.log(`wrote ${path}`);
  }
}
process.exit(stale ? 1 : 0);
