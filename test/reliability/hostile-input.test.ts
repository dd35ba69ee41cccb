/**
 * Property tests over the command parsers: whatever is typed, the answer is either a valid request
 * or one clear UserError — nothing else escapes the parser.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseImagine, parseImagineText, type ImagineLimits } from '../../commands/imagine.js';
import { UserError } from '../../src/core/errors.js';
import { ASPECT_RATIOS, type ImagineRequest } from '../../src/core/types.js';

const limits: ImagineLimits = {
  maxImagesPerJob: 100,
  providers: ['fal', 'local'],
  defaultProvider: 'local',
  defaultModels: { fal: 'fal-ai/flux/schnell', replicate: 'black-forest-labs/flux-schnell', local: 'local' },
};

function valid(request: ImagineRequest): void {
  const chars = Array.from(request.prompt);
  expect(chars.length).toBeGreaterThanOrEqual(1);
  expect(chars.length).toBeLessThanOrEqual(1500);
  // eslint-disable-next-line no-control-regex -- the test asserts no control character survives
  expect(request.prompt).not.toMatch(/[\u0000-\u0008\u000B-\u001F\u007F\u200B-\u200D\u2060\uFEFF]/);
  expect(request.prompt).toBe(request.prompt.trim());
  expect(Number.isInteger(request.count) && request.count >= 1 && request.count <= 100).toBe(true);
  expect(ASPECT_RATIOS).toContain(request.aspectRatio);
  expect(limits.providers).toContain(request.provider);
  if (request.seed !== undefined) expect(Number.isInteger(request.seed) && request.seed >= 0 && request.seed <= 2 ** 32 - 1).toBe(true);
}

/** Either a valid request or a UserError with a one-line message; anything else fails the property. */
function answer(parse: () => ImagineRequest): 'request' | 'error' {
  try {
    valid(parse());
    return 'request';
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    expect(error.message.length).toBeGreaterThan(10);
    expect(error.message.length).toBeLessThan(400);
    expect(error.message).not.toContain('\n');
    return 'error';
  }
}

const flag = fc.constantFrom('--count', '--n', '--ar', '--aspect', '--seed', '--provider', '--model', '--no', '--negative', '--prompt', '--colour', '--', '—count', '--COUNT');
const value = fc.oneof(
  fc.constantFrom('0', '-1', '1.5', '1e9', 'NaN', 'Infinity', '4', '100', '101', '16:9', '5:7', 'fal', 'replicate', 'local', '@everyone', '<@&123>', '```', ''),
  fc.string({ maxLength: 30 }),
  fc.integer().map(String),
);
const word = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.constantFrom('@everyone', '@here', '<@&123456789>', '<@42>', '**bold**', '```js', '\u200b', '\u202e', 'مرحبا', '🦊', '\u0000', '\n'),
);
const command = fc.array(fc.oneof(word, flag, value), { maxLength: 25 }).map((parts) => parts.join(' '));

describe('hostile input', () => {
  it('inline flags: any text gives a valid request or one clear error', () => {
    const seen = { request: 0, error: 0 };
    fc.assert(
      fc.property(command, (text) => {
        seen[answer(() => parseImagineText(text, limits))] += 1;
      }),
      { numRuns: 3000, seed: 20261122 },
    );
    // both kinds of answer really happen, so the property is not vacuous
    expect(seen.request).toBeGreaterThan(100);
    expect(seen.error).toBeGreaterThan(100);
  });

  it('typed options: any values give a valid request or one clear error', () => {
    fc.assert(
      fc.property(
        fc.record({ prompt: fc.anything(), count: fc.anything(), ar: fc.anything(), seed: fc.anything(), provider: fc.anything(), model: fc.anything(), negative: fc.anything() }, { requiredKeys: [] }),
        (raw) => {
          answer(() => parseImagine(raw, limits));
        },
      ),
      { numRuns: 3000, seed: 7 },
    );
  });

  it.each([
    ['a fox '.repeat(2000), 'Expected `prompt` to be 1 to 1500 characters, got 11999.'],
    ['x'.repeat(10_000), 'Expected `prompt` to be 1 to 1500 characters, got 10000.'],
    ['fox --count 1e9', 'Expected `count` to be an integer from 1 to 100, got `1e9`.'],
    ['fox --count NaN', 'Expected `count` to be an integer from 1 to 100, got `NaN`.'],
    ['fox --count -1', 'Expected `count` to be an integer from 1 to 100, got `-1`.'],
    ['fox --seed 99999999999999999999', 'Expected `seed` to be an integer from 0 to 4294967295, got `99999999999999999999`.'],
    ['\u200b\u200d\ufeff', 'Expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    ['fox --no', 'Option `--no` needs a value, e.g. `--no …`.'],
  ])('answers hostile input #%# clearly', (text, message) => {
    expect(() => parseImagineText(text, limits)).toThrow(message);
  });

  it('keeps mentions and markdown as plain prompt text (platforms send them with mentions disabled)', () => {
    const request = parseImagineText('@everyone <@&123> **fox** ```code``` \u202egnirts', limits);
    expect(request.prompt).toBe('@everyone <@&123> **fox** ```code``` \u202egnirts');
  });
});
