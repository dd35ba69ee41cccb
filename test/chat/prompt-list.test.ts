/**
 * Prompt lists and --draft through every front end, each with its real client: discord.js receiving
 * an interaction with a `.txt` attachment from the Discord fake (the adapter fetches the file from the
 * fake's attachment URL), Bolt receiving a signed multi-line slash command, the playground's HTTP
 * API, and `art-factory generate --prompts FILE` run in this process. What is asserted is the request
 * each job recorded (`job.request.prompts`, `job.request.draft`): how the engine plans and renders a
 * list is the engine's tests' to check.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startPlayground } from '../../src/chat/playground/index.js';
import type { PromptEntry } from '../../src/core/types.js';
import { buildApp, onCleanup, tempDir } from '../helpers.js';
import { answerOf, jobIdOf, PRIVATE, progressMessageOf, startBot } from './discord/harness.js';
import { openPlayground, sharedBrowser } from './playground/chromium.js';
import { slackHarness } from './slack/harness.js';
import { cliInProcess } from '../cli-in-process.js';

/** Jobs run slowly enough that none finishes while a test reads it; nothing here waits for images. */
const SLOW = { LOCAL_LATENCY_MS: '200' };

const LIST = ['# storyboard, scene 1', 'a red fox in snow', '', 'a blue owl at dusk --count 2', 'a red fox in snow --count 1'].join('\n');
/** LIST with a job count of 3: the fox twice (lines 2 and 5, merged, the larger count), the owl with its own 2. */
const ENTRIES: PromptEntry[] = [
  { prompt: 'a red fox in snow', count: 3, lines: [{ line: 2, count: 3 }, { line: 5, count: 1 }] },
  { prompt: 'a blue owl at dusk', count: 2, lines: [{ line: 4, count: 2 }] },
];

describe('Discord: a `prompts` attachment', () => {
  it('fetches the .txt file from the attachment URL and starts one job with every entry, as a draft', async () => {
    const { fake, app } = await startBot({ env: SLOW });
    const sent = fake.sendCommand({
      name: 'imagine',
      options: { count: 3, ar: '16:9', draft: true },
      attachments: { prompts: { filename: 'storyboard.txt', bytes: Buffer.from(LIST) } },
    });
    expect(sent.payload['data']['options']).toContainEqual({ name: 'prompts', type: 11, value: expect.any(String) });
    const jobId = await jobIdOf(fake, await progressMessageOf(fake, sent.id));
    const job = await app.engine.get(jobId);
    expect(job?.request).toMatchObject({ prompt: 'a red fox in snow', count: 5, aspectRatio: '16:9', draft: true, prompts: ENTRIES });
    expect(fake.interaction(sent.id)!.callbacks[0]?.type).toBe(5); // deferred publicly: the job's progress message
  });

  it.each([
    [
      'a file that is not UTF-8',
      { filename: 'list.txt', bytes: Buffer.from([0x61, 0xff, 0xfe]) },
      'Expected `prompts` to be UTF-8 text, and this file is not: save it as UTF-8.',
    ],
    [
      'a file that is not text',
      { filename: 'list.png', bytes: Buffer.from('a fox'), contentType: 'image/png' },
      'Expected `prompts` to be a .txt file (text/plain), got `list.png` (`image/png`).',
    ],
    [
      'a file larger than 64 KiB (refused from its reported size)',
      { filename: 'list.txt', bytes: Buffer.from('a fox'), size: 70 * 1024 },
      'Expected `prompts` to be a file of at most 64 KiB, got 70 KiB.',
    ],
    [
      'a file served larger than it was announced (cut off at the cap)',
      { filename: 'list.txt', bytes: Buffer.alloc(65 * 1024, 0x61), size: 10 },
      'Expected `prompts` to be a file of at most 64 KiB, got a larger one.',
    ],
    [
      "a URL off Discord's CDN",
      { filename: 'list.txt', bytes: Buffer.from('a fox'), url: 'http://169.254.169.254/latest/list.txt' },
      'Could not fetch the `prompts` file from Discord; attach it again.',
    ],
    [
      'a list with a bad line',
      { filename: 'list.txt', bytes: Buffer.from('a fox\nan owl --seed 4') },
      'Line 2: only `--count` may be given per prompt; `--seed` applies to the whole job, give it with the command.',
    ],
  ])('refuses %s privately, in one line, and starts nothing', async (_, upload, message) => {
    const { fake, app } = await startBot();
    const sent = fake.sendCommand({ name: 'imagine', options: { count: 2 }, attachments: { prompts: upload } });
    const callbacks = await answerOf(fake, sent.id);
    expect(callbacks.map((c) => c.type)).toEqual([4]);
    expect(callbacks[0]?.data).toMatchObject({ content: message, flags: PRIVATE });
    expect(await app.engine.listJobs(fake.defaultGuildId!)).toEqual([]);
  });

  it('asks for `prompt` or a `prompts` file when neither is given, and refuses both at once', async () => {
    const { fake } = await startBot();
    const neither = fake.sendCommand({ name: 'imagine', options: { count: 2 } });
    expect((await answerOf(fake, neither.id))[0]?.data?.['content']).toBe('Give `prompt`, or a `prompts` file with one prompt per line.');
    const both = fake.sendCommand({ name: 'imagine', options: { prompt: 'a fox' }, attachments: { prompts: { filename: 'l.txt', bytes: Buffer.from('an owl') } } });
    expect((await answerOf(fake, both.id))[0]?.data?.['content']).toBe('Give either `prompt` or a `prompts` file, not both.');
  });
});

describe('Slack: a multi-line /imagine', () => {
  it("makes each later line a prompt, the first line's flags the whole job's", async () => {
    const h = await slackHarness({ env: SLOW });
    const res = await h.imagine(`--count 3 --ar 16:9 --draft\n${LIST}`);
    expect(res).toMatchObject({ status: 200, body: '' });
    const { jobId } = await h.progressPost();
    const job = await h.app.engine.get(jobId);
    // Slack's lines are the command's: the first is the flags line, so the list starts at line 2.
    const shifted = ENTRIES.map((entry) => ({ ...entry, lines: entry.lines.map((l) => ({ ...l, line: l.line + 1 })) }));
    expect(job?.request).toMatchObject({ prompt: 'a red fox in snow', count: 5, aspectRatio: '16:9', draft: true, prompts: shifted });
  });

  it('refuses a later line with a job option in the ack, naming the line, and starts nothing', async () => {
    const h = await slackHarness();
    const res = await h.imagine('--count 2\na red fox\na blue owl --ar 1:1');
    expect(JSON.parse(res.body)).toMatchObject({
      response_type: 'ephemeral',
      text: 'Line 3: only `--count` may be given per prompt; `--ar` applies to the whole job, give it on the first line.',
    });
    expect(await h.app.engine.listJobs('T1')).toEqual([]);
  });
});

describe('the playground: a multi-line command', () => {
  async function playground() {
    const app = await buildApp({ env: { ...SLOW, LOCAL_CONCURRENCY: '1' } });
    const pg = await startPlayground(app, { port: 0 });
    onCleanup(() => pg.stop());
    const command = async (text: string) => {
      const response = await fetch(`${pg.url}/api/command`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text }) });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    };
    return { app, command };
  }

  it('starts one job with every line as a prompt, and --draft', async () => {
    const { app, command } = await playground();
    const { status, body } = await command(`/imagine a green frog --count 3 --draft on\n${LIST}`);
    expect(status).toBe(200);
    const job = await app.engine.get(body.job.id);
    expect(job?.request.draft).toBe(true);
    expect(job?.request.prompts?.map((e) => [e.prompt, e.count, e.lines.map((l) => l.line)])).toEqual([
      ['a green frog', 3, [1]],
      ['a red fox in snow', 3, [3, 6]],
      ['a blue owl at dusk', 2, [5]],
    ]);
    expect(job?.request.count).toBe(8);
  });

  it('refuses a bad line, and a command too long to be whole, with one line each', async () => {
    const { app, command } = await playground();
    expect(await command('/imagine --count 2\na red fox\n--count 3')).toEqual({
      status: 400,
      body: { error: 'Line 3: expected `prompt` to be 1 to 1500 characters, got an empty prompt.' },
    });
    const long = await command(`/imagine --count 1\n${'a fox\n'.repeat(11_000)}`);
    expect(long).toEqual({ status: 400, body: { error: 'The command is longer than 65536 characters; split the prompt list into several jobs.' } });
    expect(await app.engine.listJobs('playground')).toEqual([]);
  });
});

// The page's box is a textarea: Shift+Enter starts a line, Enter sends the whole list.
const { plan, browser } = sharedBrowser();

describe.skipIf(!('run' in plan))('the playground page in Chromium', () => {
  it('sends a list typed with Shift+Enter as one command, and shows it as typed', async () => {
    const app = await buildApp({ env: { ...SLOW, LOCAL_CONCURRENCY: '1' } });
    const pg = await startPlayground(app, { port: 0 });
    onCleanup(() => pg.stop());
    const page = await openPlayground(browser(), pg.url);
    const box = page.locator('#command');
    expect(await box.evaluate((node) => node.tagName)).toBe('TEXTAREA');
    await box.pressSequentially('/imagine --count 1 --draft');
    await page.keyboard.press('Shift+Enter');
    await box.pressSequentially('a red fox');
    await page.keyboard.press('Shift+Enter');
    await box.pressSequentially('a blue owl --count 2');
    expect(await box.inputValue()).toBe('/imagine --count 1 --draft\na red fox\na blue owl --count 2');
    await page.keyboard.press('Enter');
    await page.locator('.bubble.job').waitFor();
    expect(await box.inputValue()).toBe('');
    expect(await page.locator('.msg.user .bubble').last().innerText()).toBe('/imagine --count 1 --draft\na red fox\na blue owl --count 2');
    const job = await app.engine.get((await page.locator('.bubble.job').getAttribute('data-job'))!);
    expect(job?.request).toMatchObject({ count: 3, draft: true, prompts: [{ prompt: 'a red fox', count: 1 }, { prompt: 'a blue owl', count: 2 }] });
  });
});

describe('the CLI: generate --prompts FILE', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });


  async function setUp() {
    const dir = await tempDir('af-cli-prompts-');
    const env = {
      HOME: dir,
      STORE_URL: `sqlite://${path.join(dir, 'store.sqlite')}`,
      OUTPUT_DIR: path.join(dir, 'output'),
      LOCAL_LATENCY_MS: '0',
      CACHE: 'off',
      TENANT_RATE_LIMIT: '',
      LOG_LEVEL: 'silent',
    };
    return { dir, env };
  }

  it('reads the file, runs one job with every entry and --draft, and prints the manifest', async () => {
    const { dir, env } = await setUp();
    const list = path.join(dir, 'storyboard.list');
    await writeFile(list, LIST);
    const run = await cliInProcess(['generate', '--prompts', list, '--count', '3', '--draft', '--seed', '5'], env);
    expect(run.stderr).toMatch(/^Job \S+: 5 draft images for 2 prompts from local/);
    expect(run.code).toBe(0);
    const jobId = path.basename(path.dirname(run.stdout.trim()));
    const app = await buildApp({ dir, env });
    const job = await app.engine.get(jobId);
    expect(job?.request).toMatchObject({ prompt: 'a red fox in snow', count: 5, seed: 5, draft: true, prompts: ENTRIES });
  });

  it.each([
    [['--prompts', 'missing.txt'], 'art-factory: cannot read --prompts missing.txt: no such file'],
    [['--prompts', 'list.txt', '--prompt', 'a fox'], 'art-factory: Give either `prompt` or a `prompts` file, not both.'],
    [['--prompts', 'bad.txt'], 'art-factory: Line 2: expected `count` to be an integer from 1 to 100, got `0`.'],
    [['--prompts', 'big.txt'], 'art-factory: Expected `prompts` to be a file of at most 64 KiB, got 70 KiB.'],
    [['--count', '2'], 'art-factory: Give `prompt`, or a `prompts` file with one prompt per line.'],
  ])('exits 2 with one line for %j', async (args, message) => {
    const { dir, env } = await setUp();
    await writeFile(path.join(dir, 'list.txt'), 'an owl\na frog');
    await writeFile(path.join(dir, 'bad.txt'), 'an owl\na frog --count 0');
    await writeFile(path.join(dir, 'big.txt'), 'a'.repeat(70 * 1024));
    const run = await cliInProcess(['generate', ...args.map((a) => (a.endsWith('.txt') ? path.join(dir, a) : a))], env);
    expect(run.code).toBe(2);
    expect(run.stderr.replaceAll(`${dir}/`, '')).toBe(`${message}\n`);
    expect(run.stdout).toBe('');
  });
});
