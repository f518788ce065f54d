// identity-json: returns every batch unchanged, in the JSON world
// (wit/json.wit): the batch arrives as one JSON document (UTF-8 bytes, a Uint8Array) and goes
// back as it came.
let ready = false;

export const jsonTransformer = {
  init(_config) {
    ready = true;
  },
  transform(batch) {
    if (!ready) throw 'transform called before a successful init';
    return batch;
  },
};
