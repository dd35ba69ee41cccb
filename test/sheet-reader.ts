/**
 * Reads a contact sheet back from its JPEG bytes, the way a person looks at it: where the tiles are
 * and which number each one shows. Nothing is taken from the renderer's answer or from metadata; the
 * pixels are decoded and each label's digits are matched against the bitmap font's glyphs. A label
 * drawn wrong reads as another number, and a label that is not a clean digit makes it throw.
 *
 * Only the layout rules (tile size from the sheet's width, where the label sits) are shared with the
 * renderer, through `sheetLayout`.
 */
import sharp from 'sharp';
import { ADVANCE, GLYPH_WIDTH, textPathData } from '../src/providers/bitmap-font.js';
import { labelFit, SHEET_COLUMNS, SHEET_TILES, sheetLayout, sheetSize, tileOrigin, type SheetLayout } from '../src/store/contact-sheet.js';

const DIGIT_ROWS = 7;
/** Font pixels a digit may differ by (JPEG ringing on one pixel) and still count as that digit. */
const MAX_WRONG_PIXELS = 2;
const LONGEST_NUMBER = 8;

/** A glyph as 7 rows of 5 bits, from the same path data the renderer draws. */
function glyphBits(ch: string): boolean[] {
  const bits = new Array<boolean>(GLYPH_WIDTH * DIGIT_ROWS).fill(false);
  for (const m of textPathData(ch, 0, 0, 1).matchAll(/M(\d+) (\d+)h(\d+)/g)) {
    const [col, row, len] = [Number(m[1]), Number(m[2]), Number(m[3])];
    for (let c = col; c < col + len; c++) if (row < DIGIT_ROWS) bits[row * GLYPH_WIDTH + c] = true;
  }
  return bits;
}

const DIGITS = [...'0123456789'].map((digit) => ({ digit, bits: glyphBits(digit) }));

interface Grey {
  data: Buffer;
  width: number;
  height: number;
}

const lit = (img: Grey, x: number, y: number): boolean => (img.data[y * img.width + x] ?? 0) > 128;

/** The 35 font pixels of the cell at (x, y), each sampled at its centre. */
function cellBits(img: Grey, x: number, y: number, scale: number): boolean[] {
  const bits: boolean[] = [];
  const mid = Math.floor(scale / 2);
  for (let row = 0; row < DIGIT_ROWS; row++) {
    for (let col = 0; col < GLYPH_WIDTH; col++) bits.push(lit(img, x + col * scale + mid, y + row * scale + mid));
  }
  return bits;
}

function matchDigit(bits: boolean[]): string | undefined {
  let best: { digit: string; wrong: number } | undefined;
  for (const { digit, bits: glyph } of DIGITS) {
    const wrong = glyph.reduce((n, on, i) => n + (on === bits[i] ? 0 : 1), 0);
    if (!best || wrong < best.wrong) best = { digit, wrong };
  }
  return best && best.wrong <= MAX_WRONG_PIXELS ? best.digit : undefined;
}

/**
 * The number in the label at the tile's corner, or undefined when the slot has no label. A label is
 * `length` digit cells, then the box's dark padding and no further digit; every length is tried (the
 * shortest that fits wins), since a long number is drawn smaller.
 */
function readLabel(img: Grey, layout: SheetLayout, x: number, y: number): number | undefined {
  let sawInk = false;
  for (let length = 1; length <= LONGEST_NUMBER; length++) {
    const { fontScale: scale, labelPadding: pad } = labelFit(layout, length);
    let text = '';
    for (let i = 0; i < length; i++) {
      const bits = cellBits(img, x + pad + i * ADVANCE * scale, y + pad, scale);
      if (bits.some(Boolean)) sawInk = true;
      const digit = matchDigit(bits);
      if (digit === undefined) break;
      text += digit;
    }
    if (text.length !== length) continue;
    // After the last digit the box's padding is dark for the whole label height; a guess one digit short
    // would find the next digit's first column there, or ('1' starts with an empty column) a digit in
    // the next cell.
    const from = x + pad + length * ADVANCE * scale - scale;
    let dark = true;
    for (let row = y + pad; row < y + pad + DIGIT_ROWS * scale && dark; row++) {
      for (let col = from + 1; col < from + pad - 1 && dark; col++) dark = !lit(img, col, row);
    }
    if (dark) dark = matchDigit(cellBits(img, x + pad + length * ADVANCE * scale, y + pad, scale)) === undefined;
    if (dark && !text.startsWith('0')) return Number(text);
  }
  if (sawInk) throw new Error(`sheet-reader: the label at (${x}, ${y}) is not a number in the sheet's font`);
  return undefined;
}

/** Whether anything but the black sheet background is in the slot (a tile is never pure black: its label box has white). */
function slotHasContent(img: Grey, layout: SheetLayout, x: number, y: number): boolean {
  for (let dy = 0; dy < layout.tileSize; dy += 4) {
    for (let dx = 0; dx < layout.tileSize; dx += 4) if ((img.data[(y + dy) * img.width + x + dx] ?? 0) > 24) return true;
  }
  return false;
}

/** The layout whose sheet width is `width`, if any. */
function layoutForWidth(width: number): SheetLayout {
  for (let tileSize = 16; tileSize <= 4096; tileSize++) {
    const layout = sheetLayout(tileSize);
    if (sheetSize(layout, 1).width === width) return layout;
  }
  throw new Error(`sheet-reader: no tile size gives a sheet ${width} px wide`);
}

/**
 * Decodes a contact sheet and reads it: how many tiles it shows and each tile's number, row by row.
 * Throws when the pixels do not look like a sheet (a tile without a readable label, a gap between
 * tiles, a size no layout gives).
 */
export async function readContactSheet(data: Buffer): Promise<{ tiles: number; numbers: number[] }> {
  const { data: pixels, info } = await sharp(data).greyscale().raw().toBuffer({ resolveWithObject: true });
  const img: Grey = { data: pixels, width: info.width, height: info.height };
  const layout = layoutForWidth(img.width);
  let rows = 0;
  while (sheetSize(layout, rows + 1).height <= img.height) rows++;
  if (rows === 0 || sheetSize(layout, rows).height !== img.height || rows * SHEET_COLUMNS > SHEET_TILES) {
    throw new Error(`sheet-reader: a sheet ${img.width} px wide cannot be ${img.height} px high`);
  }
  const numbers: number[] = [];
  let ended = false;
  for (let slot = 0; slot < rows * SHEET_COLUMNS; slot++) {
    const { x, y } = tileOrigin(layout, slot);
    const number = readLabel(img, layout, x, y);
    if (number === undefined) {
      if (slotHasContent(img, layout, x, y)) throw new Error(`sheet-reader: tile ${slot + 1} has no label`);
      ended = true;
      continue;
    }
    if (ended) throw new Error(`sheet-reader: tile ${slot + 1} comes after an empty slot`);
    numbers.push(number);
  }
  if (numbers.length <= (rows - 1) * SHEET_COLUMNS) throw new Error(`sheet-reader: the sheet's last row is empty`);
  return { tiles: numbers.length, numbers };
}
