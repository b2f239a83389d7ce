// Writes the part of an OpenAPI description the tests need (the named paths, whole,
// from a dereferenced description: no $ref left), so the contract server starts in
// seconds rather than reading 70 MB. Usage: node subset.js FROM TO PATH...
const fs = require('fs');
const [,, from, to, ...paths] = process.argv;
const spec = JSON.parse(fs.readFileSync(from, 'utf8'));
const out = { openapi: spec.openapi, info: { ...spec.info, description: `A subset of ${from}: ${paths.join(', ')}` }, servers: [{ url: '/' }], paths: {} };
for (const p of paths) {
  if (!spec.paths[p]) { console.error(`no path ${p}`); process.exit(1); }
  out.paths[p] = spec.paths[p];
}
fs.writeFileSync(to, JSON.stringify(out, null, 1));
