#!/usr/bin/env node
// `art-factory` and `npm start`: reads ./.env when there is one, builds dist/ when it is missing or older
// than the sources (a fresh clone, a `git pull`, an edit), then runs the compiled CLI with plain node —
// tsx and esbuild are development tools only.
import { BuildError, ensureBuilt } from '../scripts/build.js';
import { loadEnvFile } from './env-file.js';

// Stack traces and logged errors point at src/*.ts lines, not dist/*.js; on before any module loads.
process.setSourceMapsEnabled(true);

const envProblem = loadEnvFile('.env');
if (envProblem) {
  process.stderr.write(`art-factory: ${envProblem}\n`);
  process.exit(2);
}

try {
  // "Building…" goes to a terminal only: tests and scripts read this command's stderr line by line.
  await ensureBuilt({
    log: (line) => process.stderr.isTTY && process.stderr.write(`${line}\n`),
    warn: (line) => process.stderr.write(`art-factory: ${line}\n`),
  });
} catch (error) {
  if (!(error instanceof BuildError)) throw error;
  process.stderr.write(`art-factory: ${error.message}\n`);
  process.exit(1);
}

const { runCli } = await import('../dist/src/cli.js');
const code = await runCli(process.argv.slice(2));
if (code >= 0) process.exitCode = code;
