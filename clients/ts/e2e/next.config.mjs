// The Next.js route of docs/typescript.md (copied to app/api/edit/route.ts by tests/test_ts_examples.py).
// This folder is the app's root (its own lock file); say so, beside clients/ts's lock file.
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
export default { turbopack: { root }, outputFileTracingRoot: root };
