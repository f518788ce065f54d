// identity-batch: passes every batch on unchanged, in the batch world
// (wit/batch.wit): the changes stay in the host, so a batch costs one call (for
// tests and for measuring what crossing the component boundary costs).
let ready = false;

export const batchTransformer = {
  init(_config) {
    ready = true;
  },
  transform(_changes) {
    if (!ready) throw 'transform called before a successful init';
  },
};
