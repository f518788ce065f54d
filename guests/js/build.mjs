// Builds the named modules with componentize-js (StarlingMonkey):
//   node build.mjs mask-columns identity
// Each <name>/ holds <name>.js (or index.js); the component is written to
// <name>/<name with - replaced by _>.wasm. build.sh decides what needs rebuilding.
// The world is picked by the exported object: `batchTransformer` → transform-batch,
// `jsonTransformer` → transform-json, `transformer` → transform.
import { componentize } from '@bytecodealliance/componentize-js';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const wit = resolve(here, '../../wit');

async function build(name) {
  const dir = join(here, name);
  const source = [join(dir, `${name}.js`), join(dir, 'index.js')].find(existsSync);
  if (!source) throw new Error(`${dir}: no ${name}.js or index.js`);
  const out = join(dir, `${name.replaceAll('-', '_')}.wasm`);
  // The world follows the export: `batchTransformer` edits its batches in place
  // through the host (wit/batch.wit), `jsonTransformer` takes them as JSON
  // (wit/json.wit), `transformer` as records (wit/world.wit).
  const text = readFileSync(source, 'utf8');
  const worldName = /export\s+const\s+batchTransformer\b/.test(text)
    ? 'transform-batch'
    : /export\s+const\s+jsonTransformer\b/.test(text)
      ? 'transform-json'
      : 'transform';
  const started = Date.now();
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    worldName,
    // The host links WASI p2 cli/io/clocks/random but not wasi:http: drop the
    // engine's fetch() and fetch-event support so the component does not import it.
    // stdio stays (console.log/console.error reach the host's log), and so do
    // clocks (Date.now) and random (Math.random, crypto.getRandomValues).
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`built ${out} (${component.length} bytes, ${secs}s)`);
}

const names = process.argv.slice(2);
if (names.length === 0) {
  console.error('usage: node build.mjs <module>...');
  process.exit(2);
}
for (const name of names) await build(name);
