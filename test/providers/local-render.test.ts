import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import { renderLocalImage, type RenderOptions } from '../../src/providers/local-render.js';
import { toFontText, truncateText, wrapText } from '../../src/providers/bitmap-font.js';

const base: RenderOptions = { prompt: 'a red fox in snow', seed: 42, width: 512, height: 384 };

/** Raw RGB pixels of the bottom `rows` rows, where the caption band lives. */
async function bottomPixels(buf: Buffer, rows: number): Promise<Buffer> {
  const { width = 0, height = 0 } = await sharp(buf).metadata();
  return sharp(buf)
    .extract({ left: 0, top: height - rows, width, height: rows })
    .raw()
    .toBuffer();
}

describe('renderLocalImage: determinism', () => {
  it('gives byte-identical output for identical options', async () => {
    const a = await renderLocalImage({ ...base, label: 'seed 42 · 1/4' });
    const b = await renderLocalImage({ ...base, label: 'seed 42 · 1/4' });
    expect(a.equals(b)).toBe(true);
  });

  it('changes with the seed', async () => {
    const a = await renderLocalImage(base);
    const b = await renderLocalImage({ ...base, seed: 43 });
    expect(a.equals(b)).toBe(false);
  });

  it('changes with the prompt', async () => {
    const a = await renderLocalImage(base);
    const b = await renderLocalImage({ ...base, prompt: 'a red fox in sand' });
    expect(a.equals(b)).toBe(false);
  });

  it('accepts the full seed range', async () => {
    for (const seed of [0, 0xffffffff]) {
      const meta = await sharp(await renderLocalImage({ ...base, seed })).metadata();
      expect(meta.format).toBe('png');
    }
  });

  it('rejects out-of-range sizes and seeds instead of rendering something wrong', async () => {
    await expect(renderLocalImage({ ...base, width: 0 })).rejects.toThrow(RangeError);
    await expect(renderLocalImage({ ...base, height: 10.5 })).rejects.toThrow(RangeError);
    await expect(renderLocalImage({ ...base, seed: -1 })).rejects.toThrow(RangeError);
    await expect(renderLocalImage({ ...base, seed: 2 ** 32 })).rejects.toThrow(RangeError);
  });
});

describe('renderLocalImage: formats and sizes', () => {
  for (const [width, height] of [
    [1024, 1024],
    [1344, 768],
    [768, 1344],
  ] as const) {
    it(`renders a ${width}x${height} PNG`, async () => {
      const buf = await renderLocalImage({ ...base, width, height, label: 'seed 42 · 3/12' });
      expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
      const meta = await sharp(buf).metadata();
      expect(meta).toMatchObject({ format: 'png', width, height });
    });
  }

  it('renders odd and tiny sizes exactly', async () => {
    for (const [width, height] of [
      [1, 1],
      [17, 5],
      [333, 999],
    ] as const) {
      const meta = await sharp(await renderLocalImage({ ...base, width, height, label: 'x' })).metadata();
      expect(meta).toMatchObject({ width, height });
    }
  });

  it('renders webp and jpeg when asked', async () => {
    const webp = await sharp(await renderLocalImage({ ...base, format: 'webp' })).metadata();
    expect(webp).toMatchObject({ format: 'webp', width: 512, height: 384 });
    const jpeg = await sharp(await renderLocalImage({ ...base, format: 'jpeg' })).metadata();
    expect(jpeg).toMatchObject({ format: 'jpeg', width: 512, height: 384 });
  });
});

describe('renderLocalImage: hostile prompts', () => {
  const hostile = [
    '🦊🔥 fox on fire 👨‍👩‍👧‍👦 🏳️‍🌈',
    'שלום עולם مرحبا بالعالم',
    'zero\u200bwidth\u200c\u200djoiner\ufeff\u2060 \u202eoverride\u202c',
    'x'.repeat(10_000),
    'word '.repeat(2_000),
    '<svg onload="alert(1)"></svg> & &amp; ]]> <!-- "quotes" \'single\'',
    '\u0000\u0001\t\n\r control chars',
    '\ud800 lone surrogate \udfff',
    '',
    '   ',
  ];
  for (const prompt of hostile) {
    it(`renders ${JSON.stringify(prompt.slice(0, 30))}${prompt.length > 30 ? '…' : ''}`, async () => {
      const buf = await renderLocalImage({ ...base, prompt, label: prompt.slice(0, 200) });
      const meta = await sharp(buf).metadata();
      expect(meta).toMatchObject({ format: 'png', width: 512, height: 384 });
    });
  }
});

describe('renderLocalImage: text is really drawn', () => {
  // Nothing in the art can be this light inside the band: it sits under a 58% black fill.
  // So a near-white pixel there is a glyph pixel, whatever the background looks like.
  const glyphMask = (rgb: Buffer): boolean[] => {
    const mask: boolean[] = [];
    for (let i = 0; i < rgb.length; i += 3) mask.push(Math.min(rgb[i] ?? 0, rgb[i + 1] ?? 0, rgb[i + 2] ?? 0) > 190);
    return mask;
  };
  const count = (mask: boolean[]): number => mask.filter(Boolean).length;

  it('draws different glyphs for prompt "A" and "W" (same seed)', async () => {
    const a = await bottomPixels(await renderLocalImage({ ...base, prompt: 'A' }), 60);
    const w = await bottomPixels(await renderLocalImage({ ...base, prompt: 'W' }), 60);
    expect(a.equals(w)).toBe(false);
    const [ma, mw] = [glyphMask(a), glyphMask(w)];
    expect(count(ma)).toBeGreaterThan(10);
    expect(count(mw)).toBeGreaterThan(10);
    expect(ma).not.toEqual(mw);
  });

  it('draws the label', async () => {
    const without = await renderLocalImage({ ...base, label: '' });
    const withLabel = await renderLocalImage({ ...base, label: 'seed 42 · 1/4' });
    expect(without.equals(withLabel)).toBe(false);
    const [p0, p1] = [await bottomPixels(without, 60), await bottomPixels(withLabel, 60)];
    expect(p0.equals(p1)).toBe(false);
    // The label adds lit pixels (the prompt is drawn in both).
    expect(count(glyphMask(p1))).toBeGreaterThan(count(glyphMask(p0)) + 50);
  });

  it('draws no glyph pixels when there is no text at all', async () => {
    const band = await bottomPixels(await renderLocalImage({ ...base, prompt: '', label: '' }), 30);
    // No band either, so allow a few bright background pixels but far fewer than text makes.
    const text = await bottomPixels(await renderLocalImage({ ...base, prompt: '', label: 'HELLO WORLD' }), 30);
    expect(count(glyphMask(text))).toBeGreaterThan(count(glyphMask(band)) + 100);
  });
});

describe('bitmap font text folding and layout', () => {
  it('folds accents, drops invisibles, and replaces the rest with ?', () => {
    expect(toFontText('Crème brûlée — “façade”…')).toBe('Creme brulee - "facade"...');
    expect(toFontText('straße Øresund')).toBe('strasse Oresund');
    expect(toFontText('a\u200bb\u200dc\ufeffd')).toBe('abcd');
    expect(toFontText('fox 🦊 שלום')).toBe('fox ? ????');
    expect(toFontText('  many\n\tspaces  ')).toBe('many spaces');
    expect(toFontText('seed 42 · 3/12')).toBe('seed 42 · 3/12');
  });

  it('wraps at word boundaries and ellipsizes overflow', () => {
    expect(wrapText('the quick brown fox', 10, 4)).toEqual(['the quick', 'brown fox']);
    expect(wrapText('abcdefghijkl', 5, 4)).toEqual(['abcde', 'fghij', 'kl']);
    const lines = wrapText('one two three four five six seven eight nine ten', 9, 2);
    expect(lines).toHaveLength(2);
    expect(lines[1]?.endsWith('\u2026')).toBe(true);
    expect(lines.every((l) => l.length <= 9)).toBe(true);
    expect(truncateText('seed 42 · 3/12', 6)).toBe('seed\u2026');
  });
});
