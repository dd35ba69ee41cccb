/**
 * Contact sheets: 5 × 5 numbered tiles on one JPEG. The numbers are checked by reading the picture
 * back (test/sheet-reader.ts decodes the pixels and matches the font's glyphs), never by trusting the
 * renderer's own account of what it drew.
 */
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { renderContactSheet, sheetLayout, type ContactSheet, type SheetTile } from '../../src/store/contact-sheet.js';
import { fakeImage, noisePng, solidImage } from '../fakes/png.js';
import { rejectionOf, tempDir } from '../helpers.js';
import { readContactSheet } from '../sheet-reader.js';

/** Writes `count` distinct 1024 × 768 PNGs and returns their paths. */
async function images(count: number, dir?: string): Promise<string[]> {
  const folder = dir ?? (await tempDir('af-sheet-'));
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(folder, `${String(i + 1).padStart(3, '0')}.png`);
    await writeFile(file, await fakeImage(1024, 768, 'png', `image ${i}`));
    paths.push(file);
  }
  return paths;
}

/** Mean and standard deviation of the tile's lower half (well away from its number label), greyscale. */
async function tileStats(sheet: ContactSheet, number: number): Promise<{ mean: number; stdev: number }> {
  const tile = sheet.tiles.find((t) => t.number === number)!;
  const half = Math.floor(tile.height / 2);
  const region = { left: tile.x + 8, top: tile.y + half, width: tile.width - 16, height: half - 8 };
  // stats() reads its input, not the pipeline's output: the region is cut out first.
  const cut = await sharp(sheet.data).extract(region).greyscale().png().toBuffer();
  const stats = await sharp(cut).stats();
  return { mean: stats.channels[0]!.mean, stdev: stats.channels[0]!.stdev };
}

describe('renderContactSheet', () => {
  it('draws 25 tiles 5 × 5, each numbered with its image number, in order', async () => {
    const paths = await images(25);
    // The second sheet of a 50-image job: the labels are the images' numbers, not their slots.
    const tiles: SheetTile[] = paths.map((p, i) => ({ number: 26 + i, path: p, nsfw: false }));
    const sheet = await renderContactSheet(tiles);

    const { tileSize, gap } = sheetLayout();
    expect(tileSize).toBe(256);
    expect(sheet.contentType).toBe('image/jpeg');
    expect([sheet.width, sheet.height]).toEqual([5 * 256 + 6 * gap, 5 * 256 + 6 * gap]);
    const meta = await sharp(sheet.data).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', sheet.width, sheet.height]);
    expect(await readContactSheet(sheet.data)).toEqual({ tiles: 25, numbers: tiles.map((t) => t.number) });
    expect(sheet.tiles[6]).toEqual({ number: 32, x: gap + 256 + gap, y: gap + 256 + gap, width: 256, height: 256 });
  });

  it('lays 7 tiles out on 2 rows, the second one partly empty', async () => {
    const paths = await images(7);
    const sheet = await renderContactSheet(paths.map((p, i) => ({ number: 54 + i, path: p, nsfw: false })));

    const { gap } = sheetLayout();
    expect([sheet.width, sheet.height]).toEqual([5 * 256 + 6 * gap, 2 * 256 + 3 * gap]);
    expect(await readContactSheet(sheet.data)).toEqual({ tiles: 7, numbers: [54, 55, 56, 57, 58, 59, 60] });
  });

  it('draws numbers with look-alike digits and up to 4 digits so that each reads back as itself', async () => {
    const numbers = [1, 7, 11, 17, 71, 111, 100, 808, 1000, 1234, 6, 9, 69, 3885, 9999, 2025];
    const [file] = await images(1);
    const sheet = await renderContactSheet(numbers.map((number) => ({ number, path: file!, nsfw: false })));

    expect((await readContactSheet(sheet.data)).numbers).toEqual(numbers);
  });

  it('a label that was drawn wrong does not read as the right number', async () => {
    const [file] = await images(1);
    const sheet = await renderContactSheet([1, 2, 3].map((number) => ({ number, path: file!, nsfw: false })));
    const { labelPadding: pad, fontScale: scale } = sheetLayout();
    const tile = sheet.tiles[1]!;
    // Paint over the middle row of the "2": as if the label had been drawn with a broken glyph.
    const blot = await sharp({ create: { width: 5 * scale, height: 2 * scale, channels: 3, background: '#fff' } }).png().toBuffer();
    const spoiled = await sharp(sheet.data)
      .composite([{ input: blot, left: tile.x + pad, top: tile.y + pad + 3 * scale }])
      .jpeg({ quality: 80 })
      .toBuffer();

    expect(await readContactSheet(sheet.data)).toEqual({ tiles: 3, numbers: [1, 2, 3] });
    const read = await readContactSheet(spoiled).then((r) => r.numbers, (error: Error) => error.message);
    expect(read).not.toEqual([1, 2, 3]);
  });

  it('blurs an NSFW tile past recognition and still shows its number', async () => {
    const dir = await tempDir('af-sheet-');
    const file = path.join(dir, 'noise.png');
    await writeFile(file, await noisePng(1024, 1024, 7));
    const sheet = await renderContactSheet([
      { number: 1, path: file, nsfw: false },
      { number: 2, path: file, nsfw: true },
    ]);

    const plain = await tileStats(sheet, 1);
    const blurred = await tileStats(sheet, 2);
    expect(plain.stdev).toBeGreaterThan(10);
    expect(blurred.stdev).toBeLessThan(plain.stdev / 10);
    expect(await readContactSheet(sheet.data)).toEqual({ tiles: 2, numbers: [1, 2] });
  });

  it('draws a missing, a damaged or an empty image as a grey tile with its number, and the rest as usual', async () => {
    const dir = await tempDir('af-sheet-');
    const [good] = await images(1, dir);
    const damaged = path.join(dir, 'damaged.png');
    await writeFile(damaged, Buffer.concat([(await fakeImage(64, 64, 'png', 'x')).subarray(0, 40), Buffer.alloc(100)]));
    const sheet = await renderContactSheet([
      { number: 1, path: good!, nsfw: false },
      { number: 2, path: path.join(dir, 'nowhere.png'), nsfw: false },
      { number: 3, path: damaged, nsfw: false },
      { number: 4, path: Buffer.alloc(0), nsfw: true },
      // bytes read through the image store are drawn like a file
      { number: 5, path: await fakeImage(1024, 768, 'png', 'image 0'), nsfw: false },
    ]);

    expect(await readContactSheet(sheet.data)).toEqual({ tiles: 5, numbers: [1, 2, 3, 4, 5] });
    for (const number of [2, 3, 4]) {
      const grey = await tileStats(sheet, number);
      expect(grey.mean).toBeGreaterThan(118);
      expect(grey.mean).toBeLessThan(138);
      expect(grey.stdev).toBeLessThan(2);
    }
    // the good tile, from a file and from bytes alike, is not grey
    expect((await tileStats(sheet, 1)).stdev).toBeGreaterThan(10);
    expect(await tileStats(sheet, 5)).toEqual(await tileStats(sheet, 1));
  });

  it('keeps a sheet of 25 noisy 1024² PNGs (the worst case for JPEG) well under the 8 MB upload limit', async () => {
    const dir = await tempDir('af-sheet-');
    const tiles: SheetTile[] = [];
    for (let i = 0; i < 25; i++) {
      const file = path.join(dir, `${i}.png`);
      await writeFile(file, await noisePng(1024, 1024, (i % 5) + 1));
      tiles.push({ number: i + 1, path: file, nsfw: false });
    }
    const sheet = await renderContactSheet(tiles);

    expect(sheet.data.length).toBeLessThan(2 * 1024 * 1024);
    expect((await readContactSheet(sheet.data)).numbers).toEqual(tiles.map((t) => t.number));
  });

  it('shows the new picture when rendered again after a reroll replaced the file', async () => {
    const dir = await tempDir('af-sheet-');
    const file = path.join(dir, '003.png');
    await writeFile(file, await solidImage(512, 512, 'png', [220, 20, 20]));
    const tiles = [{ number: 3, path: file, nsfw: false }];
    const before = await renderContactSheet(tiles);
    // ImageFiles writes a temp file and renames it over the old one
    await writeFile(`${file}.new`, await solidImage(512, 512, 'png', [20, 20, 220]));
    await rename(`${file}.new`, file);
    const after = await renderContactSheet(tiles);

    const blue = async (sheet: ContactSheet): Promise<number> => {
      const cut = await sharp(sheet.data).extract({ left: 100, top: 200, width: 100, height: 50 }).png().toBuffer();
      return (await sharp(cut).stats()).channels[2]!.mean;
    };
    expect(await blue(before)).toBeLessThan(60);
    expect(await blue(after)).toBeGreaterThan(180);
  });

  it('gives the same bytes for the same tiles', async () => {
    const paths = await images(3);
    const tiles = paths.map((p, i) => ({ number: i + 1, path: p, nsfw: i === 1 }));
    const [a, b] = [await renderContactSheet(tiles), await renderContactSheet(tiles)];

    expect(a.data.equals(b.data)).toBe(true);
  });

  it('refuses no tiles, more than 25, and a number that is not a positive integer', async () => {
    const [file] = await images(1);
    const tile = { number: 1, path: file!, nsfw: false };
    expect(String(await rejectionOf(renderContactSheet([])))).toContain('expected 1 to 25 tiles, got 0');
    expect(String(await rejectionOf(renderContactSheet(Array.from({ length: 26 }, () => tile))))).toContain('got 26');
    expect(String(await rejectionOf(renderContactSheet([{ ...tile, number: 0 }])))).toContain('positive integer, got 0');
  });
});
