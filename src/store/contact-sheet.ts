/**
 * Contact sheets: up to 25 of a job's images on one JPEG, 5 × 5, each tile numbered, for jobs too big
 * to post one attachment per image. A 25-tile sheet of 1024² images is well under the chat upload
 * limits (8 MB); see the size test.
 *
 * Numbers are drawn with the offline renderer's bitmap font (SVG paths, no system fonts), so the bytes
 * are the same on any machine with the same sharp build, and test/sheet-reader.ts can read them back.
 * NSFW-flagged tiles are blurred past recognition; their number stays legible. A file that is missing
 * or does not decode becomes a grey numbered tile: one bad image never costs the whole sheet.
 */
import { readFile } from 'node:fs/promises';
import sharp, { type OverlayOptions } from 'sharp';
// The font lives with the local renderer, its first user; it has no provider dependencies.
import { ADVANCE, textPathData } from '../providers/bitmap-font.js';
import { MAX_IMAGE_PIXELS } from './files.js';

export const SHEET_COLUMNS = 5;
export const SHEET_TILES = 25; // 5 × 5

/** Rows a font glyph lights (row 7 is only for descenders, which digits have none of). */
const DIGIT_ROWS = 7;
/** @default the side of one tile's square box, in pixels */
export const DEFAULT_TILE_SIZE = 256;
const MIN_TILE_SIZE = 32;
const MAX_TILE_SIZE = 1024;
/** Strong enough that nothing of the picture can be made out at 256 px, the tile's colours remain. */
const NSFW_BLUR_SIGMA = 30;
/** Images decoded at once: a 25-tile sheet of 8192² images must not hold 25 decodes in memory. */
const DECODES_AT_ONCE = 4;
const JPEG_QUALITY = 80;

const SHEET_BACKGROUND = { r: 0, g: 0, b: 0 };
/** Letterbox of an image that is not square: dark, but apart from the gaps between tiles. */
const TILE_BACKGROUND = { r: 0x26, g: 0x26, b: 0x26 };
/** A file that could not be read. */
const MISSING_TILE = { r: 0x80, g: 0x80, b: 0x80 };

export interface SheetTile {
  /** the image's number in its job (1-based), drawn on the tile */
  number: number;
  /**
   * absolute path of the image file, or its bytes (read through the image store, which may fetch them
   * from the bucket); empty bytes draw the grey tile of an image that could not be read
   */
  path: string | Buffer;
  nsfw: boolean;
}

export interface ContactSheet {
  data: Buffer;
  contentType: 'image/jpeg';
  width: number;
  height: number;
  /** where each tile was drawn, in the order given */
  tiles: { number: number; x: number; y: number; width: number; height: number }[];
}

/** Where things go on a sheet of tiles `tileSize` wide; shared with the test reader. */
export interface SheetLayout {
  tileSize: number;
  /** between tiles and around the edge */
  gap: number;
  /** output pixels per font pixel of the number label */
  fontScale: number;
  /** from the label box's edge to the digits */
  labelPadding: number;
}

export function sheetLayout(tileSize = DEFAULT_TILE_SIZE): SheetLayout {
  return {
    tileSize,
    gap: Math.max(2, Math.round(tileSize / 64)),
    // 5 at 256 px: 35 px digits, still ~15 px when a chat client shows the sheet 550 px wide.
    fontScale: Math.max(2, Math.round(tileSize / 48)),
    labelPadding: Math.max(2, Math.round(tileSize / 32)),
  };
}

/** The sheet's size in pixels for `rows` full rows. */
export function sheetSize(layout: SheetLayout, rows: number): { width: number; height: number } {
  const { tileSize, gap } = layout;
  return { width: SHEET_COLUMNS * tileSize + (SHEET_COLUMNS + 1) * gap, height: rows * tileSize + (rows + 1) * gap };
}

/** Top-left corner of the tile in slot `index` (0-based, row by row). */
export function tileOrigin(layout: SheetLayout, index: number): { x: number; y: number } {
  const { tileSize, gap } = layout;
  return {
    x: gap + (index % SHEET_COLUMNS) * (tileSize + gap),
    y: gap + Math.floor(index / SHEET_COLUMNS) * (tileSize + gap),
  };
}

/**
 * Renders one contact sheet of 1 to 25 tiles, in the order given, 5 per row.
 * @param options.tileSize side of each tile's box in pixels, 32–1024 @default 256
 */
export async function renderContactSheet(tiles: readonly SheetTile[], options: { tileSize?: number } = {}): Promise<ContactSheet> {
  if (tiles.length < 1 || tiles.length > SHEET_TILES) {
    throw new RangeError(`renderContactSheet: expected 1 to ${SHEET_TILES} tiles, got ${tiles.length}`);
  }
  for (const tile of tiles) {
    if (!Number.isSafeInteger(tile.number) || tile.number < 1) {
      throw new RangeError(`renderContactSheet: expected each tile's number to be a positive integer, got ${tile.number}`);
    }
  }
  const tileSize = options.tileSize ?? DEFAULT_TILE_SIZE;
  if (!Number.isInteger(tileSize) || tileSize < MIN_TILE_SIZE || tileSize > MAX_TILE_SIZE) {
    throw new RangeError(`renderContactSheet: expected tileSize to be an integer from ${MIN_TILE_SIZE} to ${MAX_TILE_SIZE}, got ${tileSize}`);
  }
  const layout = sheetLayout(tileSize);
  const rows = Math.ceil(tiles.length / SHEET_COLUMNS);
  const { width, height } = sheetSize(layout, rows);

  const pixels = await mapLimited(tiles, DECODES_AT_ONCE, (tile) => tilePixels(tile, tileSize));
  const placed = tiles.map((tile, index) => ({ number: tile.number, ...tileOrigin(layout, index), width: tileSize, height: tileSize }));
  const composites: OverlayOptions[] = placed.map((at, index) => ({
    input: pixels[index]!,
    raw: { width: tileSize, height: tileSize, channels: 3 },
    left: at.x,
    top: at.y,
  }));
  composites.push({ input: Buffer.from(labelsSvg(layout, placed, width, height)), left: 0, top: 0 });

  const data = await sharp({ create: { width, height, channels: 3, background: SHEET_BACKGROUND } })
    .composite(composites)
    .jpeg({ quality: JPEG_QUALITY })
    .toBuffer();
  return { data, contentType: 'image/jpeg', width, height, tiles: placed };
}

/** The tile's RGB pixels: the image fitted in its box (blurred when flagged), or flat grey when it cannot be read. */
async function tilePixels(tile: SheetTile, tileSize: number): Promise<Buffer> {
  let fitted: Buffer;
  try {
    // Bytes, not the path: libvips may answer a load of a file name it has seen from its cache, and a
    // sheet re-rendered after a reroll must show the new image.
    const input = typeof tile.path === 'string' ? await readFile(tile.path) : tile.path;
    fitted = await sharp(input, { limitInputPixels: MAX_IMAGE_PIXELS })
      .rotate() // EXIF orientation, as chat clients show the image itself
      .flatten({ background: TILE_BACKGROUND })
      .resize(tileSize, tileSize, { fit: 'contain', background: TILE_BACKGROUND })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer();
  } catch {
    return solid(tileSize, MISSING_TILE);
  }
  if (!tile.nsfw) return fitted;
  // A second pass, so the blur is certainly applied at tile size (sigma means the same on every sheet).
  return sharp(fitted, { raw: { width: tileSize, height: tileSize, channels: 3 } }).blur(NSFW_BLUR_SIGMA).raw().toBuffer();
}

function solid(tileSize: number, { r, g, b }: { r: number; g: number; b: number }): Buffer {
  const data = Buffer.alloc(tileSize * tileSize * 3);
  for (let i = 0; i < data.length; i += 3) {
    data[i] = r;
    data[i + 1] = g;
    data[i + 2] = b;
  }
  return data;
}

/**
 * One SVG over the whole sheet: a black box in each tile's top-left corner with its number in white.
 * Only digits come in (numbers are checked integers), never user text.
 */
function labelsSvg(layout: SheetLayout, placed: readonly { number: number; x: number; y: number }[], width: number, height: number): string {
  const boxes: string[] = [];
  const digits: string[] = [];
  for (const { number, x, y } of placed) {
    const text = String(number);
    const { fontScale: scale, labelPadding: pad } = labelFit(layout, text.length);
    const boxWidth = pad * 2 + text.length * ADVANCE * scale - scale;
    const boxHeight = pad * 2 + DIGIT_ROWS * scale;
    boxes.push(`M${x} ${y}h${boxWidth}v${boxHeight}h-${boxWidth}z`);
    digits.push(textPathData(text, x + pad, y + pad, scale));
  }
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" shape-rendering="crispEdges">` +
    `<path fill="#000" d="${boxes.join('')}"/><path fill="#fff" d="${digits.join('')}"/></svg>`
  );
}

/**
 * The label's scale for a number of `length` digits: the layout's, made smaller only when the number
 * would otherwise cover most of the tile (5 digits and more on small tiles).
 */
export function labelFit(layout: SheetLayout, length: number): { fontScale: number; labelPadding: number } {
  let scale = layout.fontScale;
  const widthAt = (s: number): number => layout.labelPadding * 2 + length * ADVANCE * s - s;
  while (scale > 1 && widthAt(scale) > layout.tileSize * 0.75) scale -= 1;
  return { fontScale: scale, labelPadding: layout.labelPadding };
}

/** `map` with at most `limit` calls running at once; results in input order. */
async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
