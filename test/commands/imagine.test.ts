import { describe, expect, it } from 'vitest';
import { help, parseImagine, parseImagineText, type ImagineLimits } from '../../commands/imagine.js';
import { userErrorOf } from '../helpers.js';

const limits: ImagineLimits = {
  maxImagesPerJob: 100,
  providers: ['fal', 'local'],
  defaultProvider: 'local',
  defaultModels: { fal: 'fal-ai/flux/schnell', replicate: 'black-forest-labs/flux-schnell', local: 'local' },
};

const rejection = userErrorOf;

describe('parseImagine (typed options)', () => {
  it('fills defaults: 4 images, 1:1, the default provider and its model', () => {
    expect(parseImagine({ prompt: '  a red fox  ' }, limits)).toEqual({
      prompt: 'a red fox',
      count: 4,
      provider: 'local',
      model: 'local',
      aspectRatio: '1:1',
    });
  });

  it('takes every option', () => {
    expect(
      parseImagine({ prompt: 'fox', count: 12, ar: '16:9', seed: 42, provider: 'fal', model: 'fal-ai/flux/dev', negative: 'blur' }, limits),
    ).toEqual({ prompt: 'fox', count: 12, provider: 'fal', model: 'fal-ai/flux/dev', aspectRatio: '16:9', seed: 42, negative: 'blur' });
  });

  it('uses the provider default model when a provider is named without a model', () => {
    expect(parseImagine({ prompt: 'fox', provider: 'fal' }, limits).model).toBe('fal-ai/flux/schnell');
  });

  it.each([
    [{ prompt: '' }, 'Expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    [{ prompt: '\u200b\u200b ' }, 'Expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    [{ prompt: 'x'.repeat(1501) }, 'Expected `prompt` to be 1 to 1500 characters, got 1501.'],
    [{ prompt: 'fox', count: 0 }, 'Expected `count` to be an integer from 1 to 100, got `0`.'],
    [{ prompt: 'fox', count: -1 }, 'Expected `count` to be an integer from 1 to 100, got `-1`.'],
    [{ prompt: 'fox', count: 101 }, 'Expected `count` to be an integer from 1 to 100, got `101`.'],
    [{ prompt: 'fox', count: 1.5 }, 'Expected `count` to be an integer from 1 to 100, got `1.5`.'],
    [{ prompt: 'fox', count: 'abc' }, 'Expected `count` to be an integer from 1 to 100, got `abc`.'],
    [{ prompt: 'fox', count: 'NaN' }, 'Expected `count` to be an integer from 1 to 100, got `NaN`.'],
    [{ prompt: 'fox', count: '1e9' }, 'Expected `count` to be an integer from 1 to 100, got `1e9`.'],
    [{ prompt: 'fox', seed: -5 }, 'Expected `seed` to be an integer from 0 to 4294967295, got `-5`.'],
    [{ prompt: 'fox', seed: 2 ** 32 }, 'Expected `seed` to be an integer from 0 to 4294967295, got `4294967296`.'],
    [{ prompt: 'fox', ar: '5:7' }, 'Expected `ar` to be one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 21:9, got `5:7`.'],
    [{ prompt: 'fox', provider: 'midjourney' }, 'Expected `provider` to be one of fal, local, got `midjourney`.'],
    [{ prompt: 'fox', provider: 'replicate' }, 'Provider `replicate` is not configured on this bot; available: fal, local.'],
    [{ prompt: 'fox', provider: 'fal', model: 'not a model' }, 'Expected `model` to be a model id such as `owner/name` for fal, got `not a model`.'],
    [{ prompt: 'fox', model: 'fal-ai/flux' }, 'Expected `model` to be `local` for local, got `fal-ai/flux`.'],
    [{ prompt: 'fox', negative: 'n'.repeat(1001) }, 'Expected `negative` to be at most 1000 characters, got 1001.'],
    [{ prompt: 42 }, 'Expected `prompt` to be text, got `42`.'],
  ])('rejects %j with a message naming the option, range and value', (raw, message) => {
    expect(rejection(() => parseImagine(raw, limits)).message).toBe(message);
  });

  it('honours a raised image limit', () => {
    expect(parseImagine({ prompt: 'fox', count: 1000 }, { ...limits, maxImagesPerJob: 1000 }).count).toBe(1000);
    expect(rejection(() => parseImagine({ prompt: 'fox', count: 1001 }, { ...limits, maxImagesPerJob: 1000 })).message).toContain('from 1 to 1000');
  });

  it('counts a prompt in characters, not UTF-16 units', () => {
    expect(parseImagine({ prompt: '🦊'.repeat(1500) }, limits).prompt).toHaveLength(3000);
  });
});

describe('parseImagineText (inline flags)', () => {
  it('gives the same request as typed options', () => {
    const text = parseImagineText('a red fox --count 12 --ar 16:9 --seed 42 --provider fal --no blur, watermark', limits);
    const typed = parseImagine({ prompt: 'a red fox', count: 12, ar: '16:9', seed: 42, provider: 'fal', negative: 'blur, watermark' }, limits);
    expect(text).toEqual(typed);
  });

  it('accepts --flag=value and aliases', () => {
    expect(parseImagineText('fox --n=3 --aspect 3:2', limits)).toMatchObject({ count: 3, aspectRatio: '3:2' });
  });

  it('keeps dashes that are not flags inside the prompt', () => {
    expect(parseImagineText('a cat -- sitting - still', limits).prompt).toBe('a cat -- sitting - still');
  });

  it.each([
    ['fox --count', 'Option `--count` needs a value, e.g. `--count 1`.'],
    ['fox --count 3 --count 4', 'Option `--count` was given more than once.'],
    ['fox --colour red', 'Unknown option `--colour`. Options: --count, --ar, --seed, --provider, --model, --no, --format, --quality, --draft, --lora.'],
    ['--count 3', 'Expected `prompt` to be 1 to 1500 characters, got an empty prompt.'],
    ['fox --count 1.5', 'Expected `count` to be an integer from 1 to 100, got `1.5`.'],
    ['fox --ar wide', 'Expected `ar` to be one of 1:1, 16:9, 9:16, 4:3, 3:4, 3:2, 2:3, 21:9, got `wide`.'],
  ])('rejects %j', (text, message) => {
    expect(rejection(() => parseImagineText(text, limits)).message).toBe(message);
  });

  it('explains every option in its help', () => {
    const text = help(limits);
    for (const flag of ['--count', '--ar', '--seed', '--provider', '--model', '--no']) expect(text).toContain(flag);
    expect(text).toContain('(1–100)');
  });
});
