// Copies the TypeScript examples of the READMEs (```ts blocks) into
// readme-examples/ (not committed), where `tsc` type-checks them against the installed client
// package like any portal code, so the examples cannot rot.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const e2e = join(dirname(fileURLToPath(import.meta.url)), "..");
const readmes = { root: join(e2e, "..", "README.md"), client: join(e2e, "..", "gen", "ts", "README.md") };
// What the examples take from the portal around them.
const preamble = "declare const accessToken: string;\n";

const out = join(e2e, "readme-examples");
rmSync(out, { recursive: true, force: true });
mkdirSync(out);
let count = 0;
for (const [name, path] of Object.entries(readmes)) {
  const blocks = [...readFileSync(path, "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)];
  if (blocks.length === 0) {
    throw new Error(`${path} has no TypeScript example`);
  }
  blocks.forEach((m, i) => {
    writeFileSync(join(out, `${name}-${i + 1}.ts`), preamble + m[1] + "export {};\n");
    count++;
  });
}
console.log(`readme-examples: ${count} TypeScript examples to type-check`);
