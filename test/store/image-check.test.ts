// The streaming image check against real encoders' output (sharp), fed in pieces of every size.
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ImageInspector, UnreadableImageError, type ImageFacts } from '../../src/store/image-check.js';
import { mulberry32 } from '../fakes/http.js';
import { noisePng } from '../fakes/png.js';

const MAX_PIXELS = 8192 * 8192;

/** Feeds `bytes` in random pieces of 1 to `largest` bytes; the facts, or the refusal's message. */
function inspect(bytes: Buffer, largest = 5000, seed = 1): ImageFacts | string {
  const random = mulberry32(seed);
  const inspector = new ImageInspector(MAX_PIXELS);
  try {
    for (let at = 0; at < bytes.length; ) {
      const size = 1 + Math.floor(random() * largest);
      inspector.push(bytes.subarray(at, at + size));
      at += size;
    }
    return inspector.end();
  } catch (error) {
    if (error instanceof UnreadableImageError) return error.message;
    throw error;
  }
}

const picture = (format: 'png' | 'jpeg' | 'webp', lossless = false) =>
  sharp({ create: { width: 321, height: 123, channels: 3, background: { r: 200, g: 40, b: 90 } } })
    .toFormat(format, format === 'webp' ? { lossless } : {})
    .toBuffer();

describe('ImageInspector', () => {
  it('reads format, size and length of a whole PNG, JPEG and WebP (lossy, lossless, extended), however it is cut', async () => {
    const extended = await sharp({ create: { width: 321, height: 123, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.5 } } })
      .webp()
      .toBuffer();
    const cases: [string, Buffer][] = [
      ['png', await picture('png')],
      ['jpeg', await picture('jpeg')],
      ['webp', await picture('webp')],
      ['webp', await picture('webp', true)],
      ['webp', extended],
    ];
    for (const [format, bytes] of cases) {
      for (const largest of [1, 7, 100, 100_000]) {
        expect(inspect(bytes, largest)).toEqual({ format, width: 321, height: 123, bytes: bytes.length });
      }
    }
    const noise = await noisePng(600, 600);
    expect(inspect(noise, 65_536)).toEqual({ format: 'png', width: 600, height: 600, bytes: noise.length });
  });

  it('refuses each format cut short, and a PNG with one byte changed in its pixel data', async () => {
    for (const format of ['png', 'jpeg', 'webp'] as const) {
      const bytes = await picture(format);
      for (const keep of [0.3, 0.9]) expect(inspect(bytes.subarray(0, Math.floor(bytes.length * keep)))).toBe('the image is damaged or incomplete');
    }
    const png = await noisePng(64, 64, 3);
    const flipped = Buffer.from(png);
    const idat = flipped.indexOf('IDAT', 0, 'latin1');
    flipped[idat + 40] = flipped[idat + 40]! ^ 0xff;
    expect(inspect(flipped)).toBe('the image is damaged or incomplete');
    expect(inspect(png)).toMatchObject({ format: 'png', width: 64, height: 64 });
  });

  it('refuses a picture declaring more pixels than allowed as soon as its header has passed', async () => {
    // a PNG's signature and IHDR (33 bytes) declaring 10000 × 7000: the rest never needs to come
    const ihdr = Buffer.alloc(17);
    ihdr.write('IHDR', 0, 'latin1');
    ihdr.writeUInt32BE(10_000, 4);
    ihdr.writeUInt32BE(7_000, 8);
    ihdr.set([8, 2, 0, 0, 0], 12);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(ihdr));
    const head = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]), ihdr, crc]);
    expect(head).toHaveLength(33);
    expect(() => new ImageInspector(MAX_PIXELS).push(head.subarray(0, 29))).toThrow('the image is larger than 67 megapixels');
    expect(inspect(head.subarray(0, 28))).toBe('the image is damaged or incomplete');
  });

  it('refuses what is not an image, and nothing at all', () => {
    expect(inspect(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'))).toBe('the image is not a PNG, JPEG or WebP');
    expect(inspect(Buffer.from('GIF89a'))).toBe('the image is not a PNG, JPEG or WebP');
    expect(inspect(Buffer.alloc(0))).toBe('the image is empty');
  });
});
