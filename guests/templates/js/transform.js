// __NAME__: hashes `email` (SHA-256, hex), drops deletes, routes by table. World
// transform-batch: the batch stays in the host; read and edit it by index.
// `transform` may be async: crypto.subtle.digest returns a promise.
const hex = (d) => [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
export const batchTransformer = {
  init(config) {},
  async transform(changes) {
    const rels = changes.relations(), ids = changes.relationIds(), ops = changes.ops();
    for (let i = 0; i < ids.length; i++) {
      if (ops[i] === 'delete') { changes.discard(i); continue; }
      const rel = rels[ids[i]];
      if (rel === undefined) continue; // a message: no table
      const email = rel.columns.findIndex((c) => c.name === 'email');
      const v = email < 0 ? undefined : changes.get(i, email);
      if (v?.tag === 'text') {
        const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(v.val));
        changes.set(i, email, { tag: 'text', val: hex(d) });
      }
      changes.route(i, `cdc.${rel.schema}.${rel.table}`);
    }
  },
};
