/**
 * `art-factory` on the command line: the same core as the bot, no chat platform needed.
 *
 *   art-factory generate --prompt "a red fox" --count 12 [--provider local|fal|replicate] [--model ID]
 *                        [--ar 16:9] [--seed N] [--no TEXT] [--draft] [--out DIR] [--tenant NAME]
 *   art-factory generate --prompts FILE [--count N] …   a prompt list: one prompt per line, each may end with --count N
 *   art-factory settings [--tenant ID] [key value …]   show a tenant's /settings, or change them
 *   art-factory resume   finish the unfinished jobs in the store
 *   art-factory retry JOB        make a finished job's failed images again, with their seeds
 *   art-factory reroll JOB N     make rejected image N again with a new seed (the rejected file is kept)
 *   art-factory review JOB approve|reject|undo 1,3,5-7   review images, as the gallery's buttons do
 *   art-factory upscale JOB      send a draft job's approved images to the provider's upscaler (into final/)
 *   art-factory migrate --to redis://HOST[:PORT] [--prefix P] [--force]   copy the SQLite store into Redis
 *   art-factory deploy-commands   register /imagine, /jobs and /settings with Discord
 *   art-factory start    run the bot (what `npm start` does)
 *
 * Exit codes: 0 done (a warning on stderr if some images failed), 1 the job failed (or the migration
 * was refused), 2 bad input or configuration, 130 interrupted (the job is saved; `art-factory resume`
 * finishes it).
 */
import { readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import cliProgress from 'cli-progress';
import { imagine } from '../commands/imagine.js';
import { answer } from '../commands/index.js';
import { settings } from '../commands/settings.js';
import { createApp, type App } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { fileTooLarge, placeholderOf, type AttachedFile, type CommandOption } from './core/command.js';
import { isUserError } from './core/errors.js';
import { parseImageNumbers } from './core/image-numbers.js';
import type { Job, ProgressEvent } from './core/types.js';
import { plural } from './core/text.js';
import { gallerySummary } from './core/views.js';
import { createLogger } from './logger.js';

/** `generate` takes /imagine's options, each under its first flag (and its other spellings), plus its own. */
const IMAGINE = imagine.definition();
const OWN_OPTIONS = [
  { flag: 'out', value: 'DIR' },
  { flag: 'tenant', value: 'NAME' },
];

/** `--count N`, `--draft` (a flag), `--prompts FILE` (a file's path). */
const shape = (o: CommandOption) => `--${o.flags[0]}${o.type === 'boolean' ? '' : ` ${placeholderOf(o)}`}`;

/** The usage text, built from /imagine's definition: a new option of the command is a new option of `generate`. */
function usage(): string {
  const standIns = new Set(IMAGINE.options.map((o) => o.requiredUnless));
  const options = [
    ...IMAGINE.options
      .filter((o) => !standIns.has(o.name))
      .map((o) => {
        // `(--prompt TEXT | --prompts FILE)`: one of the two is required.
        const standIn = IMAGINE.options.find((other) => other.name === o.requiredUnless);
        if (o.required && standIn) return `(${shape(o)} | ${shape(standIn)})`;
        return o.required ? shape(o) : `[${shape(o)}]`;
      }),
    ...OWN_OPTIONS.map((o) => `[--${o.flag} ${o.value}]`),
  ];
  // Wrapped under the command, as a terminal shows it.
  const lines: string[] = [];
  for (const option of options) {
    const last = lines.at(-1);
    if (last !== undefined && last.length + option.length < 78) lines[lines.length - 1] = `${last} ${option}`;
    else lines.push(option);
  }
  return [
    'Usage:',
    `  art-factory generate ${lines.join(`\n${' '.repeat(23)}`)}`,
    '  art-factory settings [--tenant ID] [key value …]',
    '  art-factory resume',
    '  art-factory retry JOB',
    '  art-factory reroll JOB N',
    '  art-factory review JOB approve|reject|undo 1,3,5-7',
    '  art-factory upscale JOB',
    '  art-factory migrate --to redis://HOST[:PORT] [--prefix P] [--force]',
    '  art-factory deploy-commands',
    '  art-factory start',
  ].join('\n');
}
export const USAGE = usage();

/** Every flag takes a value but a boolean's (`--draft`); an attachment's value is a file's path. */
type FlagShape = { type: 'boolean' | 'string'; multiple?: boolean };
const GENERATE_OPTIONS: ParseArgsConfig['options'] = Object.fromEntries([
  ...IMAGINE.options.flatMap((o) =>
    o.flags.map((flag): [string, FlagShape] => [flag, { type: o.type === 'boolean' ? 'boolean' : 'string', ...(o.repeatable ? { multiple: true } : {}) }]),
  ),
  ...OWN_OPTIONS.map((o): [string, FlagShape] => [o.flag, { type: 'string' }]),
]);

class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

function formatEta(ms: number | undefined): string {
  if (ms === undefined) return '…';
  const seconds = Math.round(ms / 1000);
  return seconds < 60 ? `${seconds}s` : `${Math.floor(seconds / 60)}m${String(seconds % 60).padStart(2, '0')}s`;
}

/** A bar on a terminal; one line per batch when stderr is a file or a pipe (CI logs stay readable). */
function progressReporter(total: number): { update(event: ProgressEvent): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: 'Batch {batch} |{bar}| {value}/{total} images | {failed} failed | ETA {eta2}', stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { batch: '0/0', failed: 0, eta2: '…' });
    return {
      update: (e) =>
        bar.update(e.imagesDone, {
          batch: `${e.batchesDone + e.batchesFailed}/${e.batchesTotal}`,
          failed: e.imagesFailed,
          eta2: formatEta(e.etaMs),
        }),
      stop: () => bar.stop(),
    };
  }
  let last = '';
  return {
    update(e) {
      const line = `Batch ${e.batchesDone + e.batchesFailed}/${e.batchesTotal} · ${e.imagesDone}/${e.imagesTotal} images${e.imagesFailed ? ` · ${e.imagesFailed} failed` : ''}`;
      if (line !== last) process.stderr.write(`${line}\n`);
      last = line;
    },
    stop() {},
  };
}

async function withApp<T>(env: NodeJS.ProcessEnv, outDir: string | undefined, work: (app: App) => Promise<T>): Promise<T> {
  const config = configOf(outDir ? { ...env, OUTPUT_DIR: outDir } : env);
  // The terminal shows a progress bar: log only what needs attention, unless LOG_LEVEL says otherwise.
  const app = await createApp(config, { logger: createLogger(env.LOG_LEVEL ? config.logLevel : 'warn') });
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    void app.close().finally(() => {
      process.stderr.write('\nart-factory: interrupted; the job is saved — run `art-factory resume` to finish it\n');
      process.exit(130);
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await work(app);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (!interrupted) await app.close();
  }
}

async function follow(app: App, job: Job): Promise<Job> {
  const reporter = progressReporter(job.request.count);
  const listener = (event: ProgressEvent) => {
    if (event.jobId === job.id) reporter.update(event);
  };
  app.engine.on('progress', listener);
  try {
    return await app.engine.waitFor(job.id);
  } finally {
    app.engine.off('progress', listener);
    reporter.stop();
  }
}

async function report(app: App, job: Job): Promise<number> {
  const manifest = app.files.locate(job.id, 'manifest.json');
  if (job.state === 'failed') throw new CliError(`job ${job.id} failed: ${job.error ?? 'unknown error'} (manifest: ${manifest})`, 1);
  if (job.error) process.stderr.write(`art-factory: warning: ${job.error}\n`);
  // The keepers in object storage (S3_BUCKET): every presigned link, one per line, on stderr (stdout is the manifest's path).
  const delivery = await app.engine.delivery(job);
  if (delivery) {
    const links = delivery.links.map((entry) => `  ${entry.file}: ${entry.url}`);
    process.stderr.write(`Delivered to ${delivery.where} (links valid ${Math.round(delivery.expiresInSeconds / 3600)} h):\n${links.join('\n')}\n`);
    if (delivery.waiting > 0) process.stderr.write(`art-factory: warning: ${plural(delivery.waiting, 'upload')} waiting to be retried (the files are kept)\n`);
  }
  const summary = gallerySummary(job);
  if (summary.upscalable > 0) process.stderr.write(`${plural(summary.upscalable, 'approved draft')} to upscale: art-factory upscale ${job.id}\n`);
  if (summary.costs) process.stderr.write(`Drafts: ${summary.costs}\n`);
  process.stdout.write(`${manifest}\n`);
  return 0;
}

async function generate(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const values: Record<string, unknown> = parseArgs({ args: argv, strict: true, allowPositionals: false, options: GENERATE_OPTIONS }).values;
  const text = (flag: string): string | undefined => {
    const value = values[flag];
    // a repeatable option (`--lora a --lora b`) is one comma-separated list, as typed elsewhere
    if (Array.isArray(value)) return value.join(',');
    return typeof value === 'string' ? value : undefined;
  };
  // Each option under whichever of its spellings was typed (`--no` or `--negative`), but not under two.
  const input: Record<string, unknown> = {};
  for (const option of IMAGINE.options) {
    const given = option.flags.filter((flag) => values[flag] !== undefined);
    if (given.length > 1) throw new CliError(`option --${option.flags[0]} was given more than once (${given.map((f) => `--${f}`).join(', ')})`, 2);
    const flag = given[0];
    if (flag === undefined) continue;
    if (option.type === 'boolean') input[option.name] = values[flag] === true;
    else if (option.type === 'attachment') input[option.name] = await fileOption(option, text(flag) ?? '');
    else input[option.name] = text(flag);
  }
  return withApp(env, text('out'), async (app) => {
    const result = await imagine.run({
      engine: app.engine,
      limits: app.limits,
      input,
      requester: { tenant: text('tenant') ?? 'cli', userId: os.userInfo().username, userName: os.userInfo().username, platform: 'cli' },
    });
    if (result.kind !== 'job') throw new CliError(result.text, 2);
    process.stderr.write(`${result.text}\n`);
    return report(app, await follow(app, result.job));
  });
}

/**
 * An attachment option on the command line is a file's path (`--prompts FILE`), read here under the
 * option's cap. The operator named the file: it is taken as text whatever its name; the command
 * still checks that it is UTF-8.
 */
async function fileOption(option: CommandOption, file: string): Promise<AttachedFile> {
  const maxBytes = option.maxBytes ?? 64 * 1024;
  const unreadable = (error: unknown) =>
    new CliError(`cannot read --${option.flags[0]} ${file}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message}`, 2);
  const info = await stat(file).catch((error: unknown) => {
    throw unreadable(error);
  });
  if (!info.isFile()) throw new CliError(`cannot read --${option.flags[0]} ${file}: not a file`, 2);
  if (info.size > maxBytes) throw fileTooLarge(option.name, maxBytes, info.size);
  const data = await readFile(file).catch((error: unknown) => {
    throw unreadable(error);
  });
  return { name: path.basename(file), contentType: 'text/plain', data };
}

/**
 * `settings [--tenant ID] [key value …]`: /settings for one tenant (a guild id, a Slack team id, or
 * `cli`, the default). The operator may change anything; the change is logged under their user name.
 */
async function settingsCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const rest: string[] = [];
  let tenant = 'cli';
  for (let i = 0; i < argv.length; i += 1) {
    const word = argv[i]!;
    if (word === '--tenant' || word.startsWith('--tenant=')) {
      const value = word === '--tenant' ? argv[(i += 1)] : word.slice('--tenant='.length);
      if (!value || !/^[\w:.-]{1,100}$/.test(value)) throw new CliError('--tenant needs an id: a guild id, a Slack team id, or cli', 2);
      tenant = value;
    } else rest.push(word);
  }
  return withApp(env, undefined, async (app) => {
    const user = os.userInfo().username;
    const result = await answer(
      settings,
      {
        engine: app.engine,
        limits: app.limits,
        input: rest.join(' '),
        requester: { tenant, userId: user, userName: user, platform: 'cli' },
        mayManage: () => Promise.resolve(true),
      },
      (error) => app.logger.error({ err: error }, 'settings failed'),
    );
    if (result.kind !== 'text') throw new CliError(result.text, result.kind === 'refused' ? 2 : 1);
    process.stdout.write(`${result.text}\n`);
    return 0;
  });
}

async function resume(env: NodeJS.ProcessEnv): Promise<number> {
  return withApp(env, undefined, async (app) => {
    const ids = await app.jobs.activeIds();
    const count = await app.engine.resume();
    if (count === 0) {
      process.stderr.write('Nothing to resume.\n');
      return 0;
    }
    let failed = 0;
    for (const id of ids) {
      const job = await app.engine.get(id);
      if (!job) continue;
      process.stderr.write(`Resuming job ${job.id}: ${job.images.length}/${job.request.count} images so far\n`);
      const finished = await follow(app, job);
      try {
        await report(app, finished);
      } catch (error) {
        failed += 1;
        process.stderr.write(`art-factory: ${(error as Error).message}\n`);
      }
    }
    return failed > 0 ? 1 : 0;
  });
}

const JOB_ID = /^[0-9]{8}-[0-9a-f]{8}$/;

const VERDICTS = { approve: 'approved', reject: 'rejected', undo: 'pending' } as const;

/** `review JOB approve 1,3,5-7`: the gallery's buttons from the command line (moves the files, updates the manifest). */
async function reviewCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [jobId, verdict, list, ...extra] = argv;
  const shape = 'usage: art-factory review JOB approve|reject|undo 1,3,5-7';
  if (jobId === undefined || !JOB_ID.test(jobId) || list === undefined || extra.length > 0) throw new CliError(shape, 2);
  if (!verdict || !Object.hasOwn(VERDICTS, verdict)) throw new CliError(`Expected approve, reject or undo, got "${verdict ?? ''}"`, 2);
  const user = os.userInfo().username;
  return withApp(env, undefined, async (app) => {
    const job = await app.engine.get(jobId);
    if (!job) throw new CliError(`No job ${jobId} in this store`, 1);
    let numbers: number[];
    try {
      numbers = parseImageNumbers(list, Math.max(0, ...job.images.map((image) => image.index)), 'image numbers');
    } catch (error) {
      if (isUserError(error)) throw new CliError(error.message, 2);
      throw error;
    }
    const missing = numbers.filter((n) => !job.images.some((image) => image.index === n));
    if (missing.length > 0) throw new CliError(`Job ${jobId} has no image ${missing.join(', ')}`, 2);
    const last = await app.engine.reviewMany(jobId, numbers, VERDICTS[verdict as keyof typeof VERDICTS], { id: user, name: user });
    const summary = gallerySummary(last);
    process.stderr.write(`Job ${jobId}: ${summary.text}\n`);
    if (summary.upscalable > 0) process.stderr.write(`${plural(summary.upscalable, 'approved draft')} to upscale: art-factory upscale ${jobId}\n`);
    process.stdout.write(`${app.files.locate(jobId, 'manifest.json')}\n`);
    return 0;
  });
}

/**
 * `retry JOB` / `reroll JOB N` / `upscale JOB`: runs a finished job again for its failed images, for
 * one rejected image, or for its approved drafts' final versions; follows it to its end and prints the
 * manifest's path, like generate.
 */
async function rerun(kind: 'retry' | 'reroll' | 'upscale', argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [jobId, number, ...extra] = argv;
  const shape = kind === 'reroll' ? 'reroll JOB N' : `${kind} JOB`;
  if (jobId === undefined || !JOB_ID.test(jobId) || extra.length > 0 || (kind !== 'reroll') !== (number === undefined)) {
    throw new CliError(`usage: art-factory ${shape} (JOB is a job id such as 20260101-0a1b2c3d)`, 2);
  }
  if (kind === 'reroll' && !/^[1-9][0-9]{0,4}$/.test(number ?? '')) throw new CliError(`Expected N to be an image number (1, 2, …), got "${number}"`, 2);
  const user = os.userInfo().username;
  return withApp(env, undefined, async (app) => {
    const by = { id: user, name: user };
    const job =
      kind === 'retry'
        ? await app.engine.retryFailed(jobId, by)
        : kind === 'upscale'
          ? await app.engine.upscaleApproved(jobId, by)
          : await app.engine.reroll(jobId, Number(number), by);
    const upscales = job.batches.filter((b) => b.upscale?.at === job.reopenedAt).length;
    process.stderr.write(
      kind === 'upscale'
        ? `Job ${job.id}: upscaling ${plural(upscales, 'approved image')}\n`
        : `Job ${job.id}: making ${kind === 'retry' ? plural(job.request.count - job.images.length, 'failed image') : `image ${number}`} again\n`,
    );
    return report(app, await follow(app, job));
  });
}

/** `migrate --help`: what it copies, and what to do before and after. */
export const MIGRATE_USAGE = [
  'Usage: art-factory migrate --to redis://HOST[:PORT] [--prefix P] [--force]',
  '',
  'Copies the SQLite store named by STORE_URL into Redis, for distributed mode (REDIS_URL): every job,',
  "finished or not, today's and yesterday's daily tallies, the review journal, and the chat adapters'",
  'records (outboxes, replay marks, settings).',
  '',
  '  1. Stop the bot first: nothing may write the SQLite store while it is copied (the migration needs',
  '     no bot running).',
  '  2. Run this command with the same STORE_URL (.env) as the bot.',
  '  3. Start the bot with REDIS_URL, REDIS_PREFIX (if you gave --prefix) and the same OUTPUT_DIR: the',
  '     first process finishes the unfinished jobs, polling calls already paid for instead of sending',
  '     them again.',
  '',
  '  --to URL      the Redis to copy into (redis:// or rediss://, a password in the URL is never printed)',
  '  --prefix P    the REDIS_PREFIX the bot will run with (default: REDIS_PREFIX, else af)',
  '  --force       copy even if Redis already holds jobs under that prefix; what it holds is kept',
  '',
  'Exit codes: 0 copied, 1 refused or failed (nothing is removed from the SQLite store), 2 bad input.',
].join('\n');

async function migrate(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: { to: { type: 'string' }, prefix: { type: 'string' }, force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(`${MIGRATE_USAGE}\n`);
    return 0;
  }
  // Only the scheme is ever echoed: the rest of the URL may carry a password.
  if (values.to === undefined) throw new CliError('migrate needs --to redis://HOST[:PORT] (see `art-factory migrate --help`)', 2);
  if (!/^rediss?:\/\/\S+$/.test(values.to)) {
    throw new CliError(`Expected --to to be a redis://HOST[:PORT] URL, got one starting "${values.to.split('//')[0]}//"`, 2);
  }
  const config = configOf(env);
  const { migrateToRedis, describeMigration, MigrateRefusal } = await import('./distributed/migrate.js');
  const prefix = values.prefix ?? config.redisPrefix;
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(prefix)) throw new CliError(`Expected --prefix to be letters, digits, _ or - (at most 32), got "${prefix}"`, 2);
  try {
    const summary = await migrateToRedis({ storeUrl: config.storeUrl, redisUrl: values.to, prefix, force: values.force ?? false });
    process.stdout.write(`${describeMigration(summary, values.to, prefix)}\n`);
    return 0;
  } catch (error) {
    if (error instanceof MigrateRefusal) throw new CliError(error.message, 1);
    throw error;
  }
}

/** The config, or a usage error (exit 2) naming the bad variable. */
function configOf(env: NodeJS.ProcessEnv): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(error.message, 2);
    throw error;
  }
}

export async function runCli(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'generate':
        return await generate(rest, env);
      case 'settings':
        return await settingsCommand(rest, env);
      case 'resume':
        return await resume(env);
      case 'retry':
      case 'reroll':
      case 'upscale':
        return await rerun(command, rest, env);
      case 'review':
        return await reviewCommand(rest, env);
      case 'migrate':
        return await migrate(rest, env);
      case 'deploy-commands': {
        const { deployCommands } = await import('./chat/discord/index.js');
        const config = configOf(env);
        if (!config.discord) throw new CliError('deploy-commands needs DISCORD_TOKEN and DISCORD_APP_ID', 2);
        const { scope, count } = await deployCommands(config);
        process.stdout.write(`Registered ${count} commands ${scope === 'guild' ? `on guild ${config.discord.guildId}` : 'globally'}.\n`);
        return 0;
      }
      case 'start': {
        const { startBot } = await import('./main.js');
        await startBot(env);
        return -1; // keeps running
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(`${USAGE}\n`);
        return command === undefined ? 2 : 0;
      default:
        throw new CliError(`unknown command "${command}"\n${USAGE}`, 2);
    }
  } catch (error) {
    if (error instanceof CliError) {
      process.stderr.write(`art-factory: ${error.message}\n`);
      return error.exitCode;
    }
    if (isUserError(error)) {
      process.stderr.write(`art-factory: ${error.message}\n`);
      return 2;
    }
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`art-factory: ${(error as Error).message}\n${USAGE}\n`);
      return 2;
    }
    process.stderr.write(`art-factory: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}
