#!/usr/bin/env node
/**
 * The JavaScript the bot runs: src/ and commands/ compiled into dist/ (same layout: dist/src/cli.js,
 * dist/commands/imagine.js), so `npm start` and the `art-factory` bin need neither tsx nor esbuild.
 *
 *   node scripts/build.js             `npm run build`: type-check (tsc -p tsconfig.build.json), then emit.
 *                                     A type error exits 1 and leaves dist/ as it was.
 *   node scripts/build.js --if-stale  `npm start`, `npm test`: emit only when dist/ is missing or older
 *                                     than a source. No type check here (`npm run typecheck` and CI do
 *                                     it, as they did when tsx ran the sources), so a stale start costs
 *                                     ~2 s, not tsc's ~10 s.
 *
 * Both emit with TypeScript's transpileModule, file by file. tsconfig.json has isolatedModules and
 * verbatimModuleSyntax on, which is TypeScript's promise that this gives the same JavaScript as tsc
 * (`npx tsc -p tsconfig.build.json` writes the same dist/, minus the files below).
 *
 * Files under src/ and commands/ that are not TypeScript are copied beside their compiled neighbours:
 * the playground serves its page from `public/` next to its own module, so the compiled playground
 * finds dist/src/chat/playground/public/ exactly as the source finds src/chat/playground/public/.
 *
 * dist/.built marks a finished build; its mtime is the moment the build started, so a source saved
 * during a build makes the next run build again. A folder's own mtime changes when a file in it is
 * added, removed or renamed, so deleting a source counts as a change too.
 *
 * Several processes may start at once (the tests spawn the bin in parallel): one builds, under a lock,
 * into a private folder that then replaces dist/ in one rename; the others wait and find it fresh. A
 * bot already running from dist/ never sees a half-written file.
 *
 * Only node's own modules are imported up front: this runs before anything else is known to work.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = path.join(ROOT, 'dist');
const STAMP = path.join(DIST, '.built');
const LOCK = path.join(ROOT, 'dist.lock');
const CONFIG = path.join(ROOT, 'tsconfig.build.json');
/** what dist/ is made from: the compiled folders, the settings that shape the output, and this file */
const INPUTS = ['src', 'commands', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'scripts/build.js'];
/** a lock older than this whose owner cannot be asked is taken over (its builder died) */
const LOCK_ABANDONED_MS = 10_000;
const LOCK_WAIT_MS = 10 * 60_000;

/** A build that cannot run or cannot finish; its message is one line for the user. */
export class BuildError extends Error {}

function newestMtime(file) {
  const stat = statSync(file, { throwIfNoEntry: false });
  if (!stat) return 0;
  let newest = stat.mtimeMs;
  if (stat.isDirectory()) for (const entry of readdirSync(file)) newest = Math.max(newest, newestMtime(path.join(file, entry)));
  return newest;
}

/** dist/ exists and no input changed since the build that made it started. */
export function isFresh() {
  const stamp = statSync(STAMP, { throwIfNoEntry: false });
  return stamp !== undefined && INPUTS.every((input) => newestMtime(path.join(ROOT, input)) <= stamp.mtimeMs);
}

/** TypeScript, a dev dependency: absent after `npm ci --omit=dev` or `npm prune --omit=dev`. */
async function loadTypeScript() {
  try {
    return (await import('typescript')).default;
  } catch {
    return undefined;
  }
}

const NO_TYPESCRIPT = 'TypeScript is not installed to build dist/: run `npm ci` (it installs the dev dependencies), then `npm run build`';

function readBuildConfig(ts) {
  const parsed = ts.getParsedCommandLineOfConfigFile(CONFIG, {}, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new BuildError(`tsconfig.build.json: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
    },
  });
  if (parsed.errors.length > 0) throw new BuildError(`tsconfig.build.json: ${ts.flattenDiagnosticMessageText(parsed.errors[0].messageText, ' ')}`);
  return parsed;
}

function listFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? listFiles(path.join(dir, entry.name)) : [path.join(dir, entry.name)],
  );
}

const TYPESCRIPT = /\.[cm]?tsx?$/;

/** Compiles every source into `outDir` and copies the other files; throws a BuildError on a syntax error. */
function emit(ts, parsed, outDir) {
  const rootDir = parsed.options.rootDir ?? ROOT;
  // transpileModule cannot see package.json's "type": "module", so NodeNext would give CommonJS; our
  // package is ESM throughout, and NodeNext's output for an ESM file is ESNext's.
  const options = { ...parsed.options, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler, noEmit: false };
  const problems = [];
  for (const file of parsed.fileNames) {
    if (file.endsWith('.d.ts')) continue;
    const out = path.join(outDir, path.relative(rootDir, file)).replace(/\.([cm]?)tsx?$/, '.$1js');
    const result = ts.transpileModule(readFileSync(file, 'utf8'), { compilerOptions: options, fileName: file, reportDiagnostics: true });
    for (const d of result.diagnostics ?? []) {
      const where = d.file && d.start !== undefined ? `:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}` : '';
      problems.push(`${path.relative(ROOT, file)}${where}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
    }
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(out, result.outputText);
    if (result.sourceMapText) {
      // The map names the source relative to where the .js will live in dist/ (the private build
      // folder sits beside dist/, so the relative path is the same), as tsc's own maps do.
      const map = JSON.parse(result.sourceMapText);
      map.sources = [path.relative(path.dirname(path.join(DIST, path.relative(outDir, out))), file)];
      writeFileSync(`${out}.map`, JSON.stringify(map));
    }
  }
  if (problems.length > 0) throw new BuildError(`cannot compile: ${problems.join('; ')}`);
  for (const include of parsed.raw?.include ?? []) {
    const dir = path.join(ROOT, include);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) continue;
    for (const file of listFiles(dir)) {
      if (TYPESCRIPT.test(file)) continue;
      const out = path.join(outDir, path.relative(rootDir, file));
      mkdirSync(path.dirname(out), { recursive: true });
      cpSync(file, out);
    }
  }
}

/** Replaces dist/ with `built` in as few steps as the file system allows. */
function swapIn(built) {
  const old = `${DIST}.old-${process.pid}`;
  try {
    renameSync(DIST, old);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  try {
    renameSync(built, DIST);
  } catch (error) {
    // Another builder (one that took over a lock it thought abandoned) swapped its own in first:
    // it was built from the same sources, so ours is not needed.
    if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    rmSync(built, { recursive: true, force: true });
  }
  rmSync(old, { recursive: true, force: true });
}

/**
 * Builds dist/ now. `typecheck` first runs tsc over the same sources and refuses to build on an error
 * (tsc prints them). Returns when dist/ is complete.
 */
export async function build({ typecheck = false } = {}) {
  const ts = await loadTypeScript();
  if (!ts) throw new BuildError(NO_TYPESCRIPT);
  if (typecheck) {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const checked = spawnSync(process.execPath, [tsc, '-p', CONFIG, '--noEmit'], { stdio: 'inherit', cwd: ROOT });
    if (checked.status !== 0) throw new BuildError('type errors (listed above); dist/ was left as it was');
  }
  const started = new Date();
  const parsed = readBuildConfig(ts);
  const tmp = `${DIST}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    emit(ts, parsed, tmp);
    const stamp = path.join(tmp, '.built');
    writeFileSync(stamp, `${JSON.stringify({ started: started.toISOString(), typechecked: typecheck })}\n`);
    utimesSync(stamp, started, started);
    swapIn(tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function lockOwnerIsGone() {
  let pid;
  try {
    pid = Number(readFileSync(path.join(LOCK, 'pid'), 'utf8'));
  } catch {
    // No pid yet: its owner is between mkdir and writing it, unless that was long ago.
    const stat = statSync(LOCK, { throwIfNoEntry: false });
    return stat !== undefined && Date.now() - stat.mtimeMs > LOCK_ABANDONED_MS;
  }
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return error.code === 'ESRCH';
  }
}

async function withLock(work) {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    if (lockOwnerIsGone()) {
      rmSync(LOCK, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new BuildError(`waited ${LOCK_WAIT_MS / 60_000} minutes for another build to finish; if none is running, remove ${LOCK}`);
    await sleep(100);
  }
  try {
    writeFileSync(path.join(LOCK, 'pid'), String(process.pid));
    return await work();
  } finally {
    rmSync(LOCK, { recursive: true, force: true });
  }
}

/**
 * Builds dist/ when it is missing or stale, once however many processes ask at the same time.
 * `log` gets one line when a build starts (the caller decides where it goes); `warn` gets one when a
 * stale dist/ must be run as it is.
 */
export async function ensureBuilt({ log = () => {}, warn = log } = {}) {
  if (isFresh()) return;
  if (!(await loadTypeScript())) {
    if (!existsSync(path.join(DIST, 'src', 'cli.js'))) throw new BuildError(`dist/ is missing and ${NO_TYPESCRIPT}`);
    // A production install (dev dependencies pruned) whose file times moved, e.g. in a copy: the
    // build it has is the one it was given, so run it rather than refuse to start.
    warn(`warning: dist/ is older than the sources and TypeScript is not installed to rebuild it; running the existing build`);
    return;
  }
  await withLock(async () => {
    if (isFresh()) return; // built by another process while this one waited
    log('Building dist/ from the TypeScript sources (once after a change)…');
    await build();
  });
}

const invokedAsScript = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedAsScript) {
  const ifStale = process.argv.includes('--if-stale');
  try {
    if (ifStale) await ensureBuilt({ log: (line) => process.stderr.write(`${line}\n`) });
    else await withLock(() => build({ typecheck: true }));
  } catch (error) {
    if (!(error instanceof BuildError)) throw error;
    process.stderr.write(`build: ${error.message}\n`);
    process.exit(1);
  }
}
