#!/usr/bin/env node
// Independent TUF client check: refreshes metadata from a repository served over HTTP with
// tuf-js's Updater and downloads one target, exactly as a third-party client would.
//
// Usage: node tufjs_verify.js --metadata-url URL --targets-url URL --root ROOT.json
//                             --cache DIR --target PATH --out FILE
// The trusted root is copied into DIR/metadata/root.json unless DIR already holds trusted
// metadata (so a second run continues from what the first one trusted).
// Exit 0 with a JSON line on stdout on success; 1 with "ErrorClass: message" on stderr otherwise.
'use strict';

const fs = require('fs');
const path = require('path');
const { Updater } = require('tuf-js');

function parseArgs(argv) {
  const wanted = ['metadata-url', 'targets-url', 'root', 'cache', 'target', 'out'];
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!wanted.includes(name) || i + 1 >= argv.length) {
      throw new Error(`bad argument '${argv[i]}'; expected --${wanted.join(' --')}`);
    }
    args[name] = argv[i + 1];
  }
  for (const name of wanted) {
    if (!args[name]) throw new Error(`missing --${name}`);
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const metadataDir = path.join(args.cache, 'metadata');
  const targetDir = path.join(args.cache, 'targets');
  fs.mkdirSync(metadataDir, { recursive: true });
  fs.mkdirSync(targetDir, { recursive: true });
  const trustedRoot = path.join(metadataDir, 'root.json');
  if (!fs.existsSync(trustedRoot)) fs.copyFileSync(args.root, trustedRoot);

  const updater = new Updater({
    metadataBaseUrl: args['metadata-url'],
    targetBaseUrl: args['targets-url'],
    metadataDir,
    targetDir,
    // Fail fast: a test server on loopback either answers at once or not at all.
    config: { fetchTimeout: 5000, fetchRetries: 0 },
  });
  await updater.refresh();
  const info = await updater.getTargetInfo(args.target);
  if (!info) throw new Error(`target '${args.target}' is not listed in the repository's targets metadata`);
  const written = await updater.downloadTarget(info, args.out);
  process.stdout.write(JSON.stringify({ target: args.target, length: info.length, file: written }) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    const name = (err && err.constructor && err.constructor.name) || 'Error';
    process.stderr.write(`${name}: ${err && err.message ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
