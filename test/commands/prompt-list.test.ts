/**
 * Prompt lists and drafts in /imagine's parsers: the one list parser (a file's text, or a text
 * command's later lines), the `prompts` file as Discord and the CLI hand it over, and the `draft`
 * flag in every spelling. Each refusal is one line that names the line or the option.
 */
import { describe, expect, it } from 'vitest';
import { parseImagine, parseImagineText, parsePromptList, PROMPT_FILE_MAX_BYTES, type ImagineLimits } from '../../commands/imagine.js';
import { definition } from '../../commands/imagine.js';
import { formatHelp, parseInlineFlags, type AttachedFile } from '../../src/core/command.js';
import { userErrorOf } from '../helpers.js';

const limits: ImagineLimits = {
  maxImagesPerJob: 100,
  providers: ['fal', 'local'],
  defaultProvider: 'local',
  defaultModels: { fal: 'fal-ai/flux/schnell', replicate: 'black-forest-labs/flux-schnell', local: 'local' },
};

const file = (text: string | Uint8Array, name = 'prompts.txt', contentType?: string): AttachedFile => ({
  name,
  ...(contentType ? { contentType } : {}),
  data: typeof text === 'string' ? Buffer.from(text) : text,
});

const lines = (n: number, line: (i: number) => string) => Array.from({ length: n }, (_, i) => line(i)).join('\n');

describe('parsePromptList', () => {
  it('makes one entry per line, skips blank lines and # comments, and gives each the default count or its own --count', () => {
    expect(parsePromptList('a red fox\n\n# owls next\na blue owl --count 2\n  a green frog --n=3  \n', limits, { count: 4 })).toEqual([
      { prompt: 'a red fox', count: 4, lines: [{ line: 1, count: 4 }] },
      { prompt: 'a blue owl', count: 2, lines: [{ line: 4, count: 2 }] },
      { prompt: 'a green frog', count: 3, lines: [{ line: 5, count: 3 }] },
    ]);
  });

  it('cleans each line like a prompt (invisible characters, runs of spaces) and takes CRLF and CR line ends', () => {
    expect(parsePromptList('a\u200b red\tfox\r\nan   owl\ra frog\u0000', limits, { count: 1 }).map((e) => e.prompt)).toEqual(['a red fox', 'an owl', 'a frog']);
  });

  it('merges identical prompts (after cleaning, case-sensitive): the largest count, and every line with its own', () => {
    expect(parsePromptList('a fox\nA fox\na  fox --count 6\na fox --count 2', limits, { count: 4 })).toEqual([
      { prompt: 'a fox', count: 6, lines: [{ line: 1, count: 4 }, { line: 3, count: 6 }, { line: 4, count: 2 }] },
      { prompt: 'A fox', count: 4, lines: [{ line: 2, count: 4 }] },
    ]);
  });

  it("gives a line without --count the tenant's default count, else 4", () => {
    expect(parsePromptList('a fox', { ...limits, defaults: { count: 2 } })[0]!.count).toBe(2);
    expect(parsePromptList('a fox', limits)[0]!.count).toBe(4);
  });

  it.each([
    [`a fox\n${'x'.repeat(1612)}`, 'Line 2: expected `prompt` to be 1 to 1500 characters, got 1612.'],
    ['a fox\n--count 3', 'Line 2: expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    ['a fox\n\u200b\u200d', 'Line 2: expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    ['a fox --count 0', 'Line 1: expected `count` to be an integer from 1 to 100, got `0`.'],
    ['a fox\n\nan owl --count 101', 'Line 3: expected `count` to be an integer from 1 to 100, got `101`.'],
    ['a fox\nan owl --count lots', 'Line 2: expected `count` to be an integer from 1 to 100, got `lots`.'],
    ['a fox\nan owl --ar 16:9', 'Line 2: only `--count` may be given per prompt; `--ar` applies to the whole job, give it with the command.'],
    ['a fox --negative blur', 'Line 1: only `--count` may be given per prompt; `--no` applies to the whole job, give it with the command.'],
    ['a fox --draft', 'Line 1: only `--count` may be given per prompt; `--draft` applies to the whole job, give it with the command.'],
    ['a fox --count 2 --count 3', 'Line 1: option `--count` was given more than once.'],
    ['a fox --count', 'Line 1: option `--count` needs a value, e.g. `--count 1`.'],
    ['a fox --colour red', 'Line 1: unknown option `--colour`. Options: --count, --ar, --seed, --provider, --model, --no, --format, --quality, --draft, --lora.'],
    ['\n# nothing but a comment\n   \n', 'The prompt list has no prompts: write one prompt per line (blank lines and lines starting with # are skipped).'],
  ])('refuses %j in one line naming the line or the option', (text, message) => {
    const error = userErrorOf(() => parsePromptList(text, limits));
    expect(error.message).toBe(message);
    expect(error.message).not.toContain('\n');
  });

  it('refuses a list that asks for more images than the job limit, naming the total', () => {
    const text = lines(26, (i) => `prompt number ${i}`);
    expect(userErrorOf(() => parsePromptList(text, limits, { count: 5 })).message).toBe("The prompt list asks for 130 images; this bot's limit is 100 per job.");
    // exactly the limit is fine
    expect(parsePromptList(lines(20, (i) => `prompt number ${i}`), limits, { count: 5 })).toHaveLength(20);
  });

  it('refuses more than 100 different prompts, and more than 1000 prompt lines even when they repeat', () => {
    const wide = { ...limits, maxImagesPerJob: 1000 };
    expect(parsePromptList(lines(100, (i) => `p${i}`), wide, { count: 1 })).toHaveLength(100);
    expect(userErrorOf(() => parsePromptList(lines(101, (i) => `p${i}`), wide, { count: 1 })).message).toBe(
      'The prompt list has 101 different prompts; at most 100 per job.',
    );
    expect(parsePromptList(lines(1000, () => 'a fox'), wide, { count: 1 })[0]!.lines).toHaveLength(1000);
    expect(userErrorOf(() => parsePromptList(lines(1001, () => 'a fox'), wide, { count: 1 })).message).toBe(
      'The prompt list has 1001 prompt lines; at most 1000 per job.',
    );
  });
});

describe('parseImagineText with several lines (Slack, the playground)', () => {
  it("applies the first line's flags to the whole job and makes each later line a prompt", () => {
    const request = parseImagineText('--count 4 --ar 16:9 --seed 7 --provider fal --format webp\na red fox\na blue owl --count 2', limits);
    expect(request).toEqual({
      prompt: 'a red fox',
      count: 6,
      provider: 'fal',
      model: 'fal-ai/flux/schnell',
      aspectRatio: '16:9',
      seed: 7,
      format: 'webp',
      prompts: [
        { prompt: 'a red fox', count: 4, lines: [{ line: 2, count: 4 }] },
        { prompt: 'a blue owl', count: 2, lines: [{ line: 3, count: 2 }] },
      ],
    });
  });

  it("takes text on the first line as the list's first prompt, with the first line's count", () => {
    expect(parseImagineText('a red fox --count 3\n\na blue owl', limits).prompts).toEqual([
      { prompt: 'a red fox', count: 3, lines: [{ line: 1, count: 3 }] },
      { prompt: 'a blue owl', count: 3, lines: [{ line: 3, count: 3 }] },
    ]);
  });

  it('makes a list of one prompt a plain request, as if typed on one line', () => {
    expect(parseImagineText('--count 3 --ar 4:3\na red fox\n\n# done', limits)).toEqual(parseImagineText('a red fox --count 3 --ar 4:3', limits));
    expect(parseImagineText('a fox\na fox --count 6', limits)).toEqual(parseImagine({ prompt: 'a fox', count: 6 }, limits));
    expect(parseImagineText('a red fox --count 2\n', limits)).toEqual(parseImagine({ prompt: 'a red fox', count: 2 }, limits));
  });

  it.each([
    ['a fox\nan owl --seed 3', 'Line 2: only `--count` may be given per prompt; `--seed` applies to the whole job, give it on the first line.'],
    ['--count 0\na fox\nan owl', 'Expected `count` to be an integer from 1 to 100, got `0`.'],
    ['--count 60\na fox\nan owl', "The prompt list asks for 120 images; this bot's limit is 100 per job."],
    [`--count 1\na fox\n${'y'.repeat(1501)}`, 'Line 3: expected `prompt` to be 1 to 1500 characters, got 1501.'],
    ['a fox --prompts list.txt', 'Option `--prompts` takes a file, which cannot be attached here: write one prompt per line after the first line instead.'],
  ])('refuses %j', (text, message) => {
    expect(userErrorOf(() => parseImagineText(text, limits)).message).toBe(message);
  });
});

describe('parseImagine with a `prompts` file (Discord, the CLI)', () => {
  it("reads a .txt file into entries; `count` is each prompt's, the other options the whole job's", () => {
    const request = parseImagine({ prompts: file('# a list\na fox\nan owl --count 1\n'), count: 2, ar: '3:2', draft: true }, limits);
    expect(request).toEqual({
      prompt: 'a fox',
      count: 3,
      provider: 'local',
      model: 'local',
      aspectRatio: '3:2',
      draft: true,
      prompts: [
        { prompt: 'a fox', count: 2, lines: [{ line: 2, count: 2 }] },
        { prompt: 'an owl', count: 1, lines: [{ line: 3, count: 1 }] },
      ],
    });
  });

  it('takes text/plain under any name, drops a UTF-8 byte order mark, and makes a one-prompt file a plain request', () => {
    expect(parseImagine({ prompts: file('\uFEFFa fox\nan owl', 'list', 'text/plain; charset=utf-8') }, limits).prompts?.map((e) => e.prompt)).toEqual([
      'a fox',
      'an owl',
    ]);
    expect(parseImagine({ prompts: file('a fox --count 3') }, limits)).toEqual(parseImagine({ prompt: 'a fox', count: 3 }, limits));
  });

  it.each([
    [{ prompts: file('a fox', 'list.pdf', 'application/pdf') }, 'Expected `prompts` to be a .txt file (text/plain), got `list.pdf` (`application/pdf`).'],
    [{ prompts: file('a fox', 'list.md') }, 'Expected `prompts` to be a .txt file (text/plain), got `list.md`.'],
    [{ prompts: file(Uint8Array.from([0x61, 0xff, 0xfe, 0x41])) }, 'Expected `prompts` to be UTF-8 text, and this file is not: save it as UTF-8.'],
    [{ prompts: file('a'.repeat(70 * 1024)) }, 'Expected `prompts` to be a file of at most 64 KiB, got 70 KiB.'],
    [{ prompts: file('a'.repeat(PROMPT_FILE_MAX_BYTES + 1)) }, 'Expected `prompts` to be a file of at most 64 KiB (65536 bytes), got 65537 bytes.'],
    [{ prompts: '1234567890' }, 'Expected `prompts` to be a .txt file, got `1234567890`.'],
    [{ prompt: 'a fox', prompts: file('an owl') }, 'Give either `prompt` or a `prompts` file, not both.'],
    [{ count: 2 }, 'Give `prompt`, or a `prompts` file with one prompt per line.'],
    [{ prompts: file('a fox\nan owl --count 0') }, 'Line 2: expected `count` to be an integer from 1 to 100, got `0`.'],
    [{ prompts: file('a fox\nan owl --ar 1:1') }, 'Line 2: only `--count` may be given per prompt; `--ar` applies to the whole job, give it with the command.'],
    [{ prompts: file('a fox\nan owl'), count: 51 }, "The prompt list asks for 102 images; this bot's limit is 100 per job."],
  ])('refuses %#: %s', (raw, message) => {
    expect(userErrorOf(() => parseImagine(raw, limits)).message).toBe(message);
  });
});

describe('draft', () => {
  it.each([
    ['a fox --draft', true],
    ['--draft a fox', true],
    ['a fox --draft on', true],
    ['a fox --draft=yes', true],
    ['a fox --draft TRUE', true],
    ['a fox --draft off', false],
    ['a fox --draft no', false],
    ['a fox --draft=false', false],
    ['a fox', false],
  ])('%j parses to draft %s', (text, draft) => {
    const request = parseImagineText(text, limits);
    expect(request.prompt).toBe('a fox');
    expect(request.draft ?? false).toBe(draft);
  });

  it('takes a boolean from typed options (Discord, the CLI) and records only a draft that is on', () => {
    expect(parseImagine({ prompt: 'a fox', draft: true }, limits).draft).toBe(true);
    expect(parseImagine({ prompt: 'a fox', draft: false }, limits)).not.toHaveProperty('draft');
  });

  it("follows the tenant's drafts default unless the command says otherwise", () => {
    const drafting = { ...limits, defaults: { draft: true } };
    expect(parseImagineText('a fox', drafting).draft).toBe(true);
    expect(parseImagineText('a fox --draft off', drafting)).not.toHaveProperty('draft');
    expect(parseImagine({ prompt: 'a fox', draft: false }, drafting)).not.toHaveProperty('draft');
    expect(definition(drafting).options.find((o) => o.name === 'draft')?.description).toContain('(default on)');
  });

  it.each([
    [() => parseImagine({ prompt: 'a fox', draft: 'maybe' }, limits), 'Expected `draft` to be on or off, got `maybe`.'],
    [() => parseImagine({ prompt: 'a fox', draft: 1 }, limits), 'Expected `draft` to be on or off, got `1`.'],
    [() => parseImagineText('a fox --draft=maybe', limits), 'Expected `draft` to be on or off, got `maybe`.'],
    [() => parseImagineText('a fox --draft on --draft', limits), 'Option `--draft` was given more than once.'],
  ])('refuses a value that is not on or off (%#)', (parse, message) => {
    expect(userErrorOf(parse).message).toBe(message);
  });
});

describe('boolean and attachment options in text', () => {
  it('help shows --draft as a flag that may stand alone and leaves out the file option', () => {
    const help = formatHelp(definition(limits));
    expect(help).toContain('--draft [on|off]  Small drafts; upscale the approved ones later (default off)');
    expect(help).not.toContain('--prompts');
    expect(help.split('\n')[0]).toBe('/imagine prompt [options] — Generate a batch of images from a prompt');
  });

  it('a bare boolean flag before a non-boolean word leaves the word to the prompt', () => {
    expect(parseInlineFlags('--draft a red fox --count 2', definition(limits), 'prompt')).toEqual({ draft: 'on', prompt: 'a red fox', count: '2' });
    expect(parseInlineFlags('a red fox --draft', definition(limits), 'prompt')).toEqual({ draft: 'on', prompt: 'a red fox' });
  });
});
