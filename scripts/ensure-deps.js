#!/usr/bin/env node
// `npm start` and `npm test` work straight after `git clone`: the first run installs the locked
// dependencies (npm ci), later runs find them and go on at once. Only node's own modules are used here.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';

const marker = 'node_modules/.package-lock.json';
const fresh = existsSync(marker) && statSync(marker).mtimeMs >= statSync('package-lock.json').mtimeMs;
if (!fresh) {
  process.stderr.write('Installing dependencies (npm ci), once…\n');
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const result = spawnSync(npm, ['ci', '--no-audit', '--no-fund'], { stdio: 'inherit' });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
