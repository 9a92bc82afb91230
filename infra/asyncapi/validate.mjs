// Validates AsyncAPI documents with the official parser (@asyncapi/parser).
//
//   node validate.mjs <parser-dir> <document>...
//
// <parser-dir> holds node_modules/@asyncapi/parser (.ci/services.sh installs it). Exits 1
// when a document has an error (or, with STRICT=1, a warning); prints every diagnostic.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

const [parserDir, ...files] = process.argv.slice(2);
if (!parserDir || files.length === 0) {
  console.error('usage: node validate.mjs <parser-dir> <document>...');
  process.exit(2);
}
const require = createRequire(resolve(parserDir, 'package.json'));
const { Parser } = require('@asyncapi/parser');
const parser = new Parser();
const severities = ['error', 'warning', 'info', 'hint'];
let failed = false;
for (const file of files) {
  const diagnostics = await parser.validate(readFileSync(file, 'utf8'));
  const errors = diagnostics.filter((d) => d.severity === 0 || (process.env.STRICT === '1' && d.severity === 1));
  for (const d of diagnostics) {
    console.log(`${file}: ${severities[d.severity] ?? d.severity}: ${d.code}: ${d.message} at /${d.path.join('/')}`);
  }
  if (errors.length) failed = true;
  else console.log(`${file}: valid AsyncAPI ${JSON.parse(readFileSync(file, 'utf8')).asyncapi}`);
}
process.exit(failed ? 1 : 0);
