// The README's (and docs/*.md's) TypeScript examples are the files under examples/ (type-checked
// by `npm run typecheck:examples`, built and run by tests/test_ts_examples.py). Each block
// follows a marker `<!-- example: clients/ts/examples/<name>.ts -->`. A block in docs/ wins over
// a README block for the same file (the README is being moved into docs/).
//
//   node scripts/readme-examples.mjs          write the README's blocks into examples/
//   node scripts/readme-examples.mjs --check  fail when a file and its README block differ
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ts = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(ts, "..", "..");
const re = /<!-- example: (\S+) -->\n```ts\n([\s\S]*?)```\n/g;
let docs = [];
try {
  docs = readdirSync(join(repo, "docs")).filter((f) => f.endsWith(".md")).sort().map((f) => join("docs", f));
} catch {}
const seen = new Set();
const blocks = [];
for (const source of [...docs, "README.md"]) {
  for (const [, path, code] of readFileSync(join(repo, source), "utf8").matchAll(re)) {
    if (seen.has(path)) continue;
    seen.add(path);
    blocks.push([source, path, code]);
  }
}
if (blocks.length === 0) {
  console.error("README.md has no `<!-- example: ... -->` blocks");
  process.exit(1);
}
let stale = 0;
for (const [source, path, code] of blocks) {
  const file = join(repo, path);
  if (!relative(join(ts, "examples"), file).match(/^[\w.-]+$/)) throw new Error(`bad example path ${path}`);
  if (process.argv.includes("--check")) {
    let have = "";
    try {
      have = readFileSync(file, "utf8");
    } catch {}
    if (have !== code) {
      console.error(`${path} differs from its ${source} block: run npm run examples:write`);
      stale++;
    }
  } else {
    writeFileSync(file, code);
    console.log(`wrote ${path}`);
  }
}
process.exit(stale ? 1 : 0);
