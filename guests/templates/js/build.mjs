// Builds __NAME__.wasm from transform.js against wit/ (cdc:pipeline@0.2.0).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const { component } = await componentize({
  sourcePath: 'transform.js',
  witPath: 'wit',
  worldName: 'transform-batch', // `batchTransformer`: the batch stays in the host (wit/batch.wit)
  // cdc-host links WASI cli/io/clocks/random only: no fetch, no wasi:http.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile('__NAME_.wasm', component);
console.log(`built __NAME_.wasm (${component.length} bytes)`);
