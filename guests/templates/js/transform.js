// __NAME__: hashes `email` (SHA-256, hex), drops deletes, routes by table.
// `transform` may be async: crypto.subtle.digest returns a promise.
export const transformer = {
  init(config) {},
  async transform(changes) {
    const out = [];
    for (const c of changes) {
      if (c.op === 'delete') continue;
      for (const col of c.after ?? []) {
        if (col.name === 'email' && col.value.tag === 'text') {
          const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(col.value.val));
          col.value = { tag: 'text', val: [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('') };
        }
      }
      c.route = `cdc.${c.schema}.${c.table}`;
      out.push(c);
    }
    return out;
  },
};
