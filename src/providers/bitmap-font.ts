/**
 * A tiny built-in 5×7 bitmap font (classic "glcdfont" style) for the offline renderer.
 *
 * Why a bitmap font instead of SVG <text>: rasterising <text> would depend on whatever
 * fonts the machine happens to have (a fresh container may have none, and two machines
 * rarely have the same ones), which would break the "identical options → identical
 * bytes on any machine" promise. Drawing our own pixels as SVG paths removes that
 * dependency entirely and also means no user text is ever embedded in the SVG.
 */

/** Glyph cell geometry, in font pixels. */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 8;
/** Horizontal advance per character (glyph + 1 px spacing). */
export const ADVANCE = 6;

/**
 * Printable ASCII 0x20..0x7E, five column bytes per glyph (bit 0 = top row),
 * stored as hex so the whole font is ~1 KB of source. Rows 0-6 hold the letter, row 7
 * is used only by real descenders (g j p q y) so they don't look like 9 and 4.
 */
const ASCII_HEX = [
  '0000000000', '00005f0000', '0007000700', '147f147f14', '242a7f2a12', '2313086462', '3649552250', '0005030000',
  '001c224100', '0041221c00', '082a1c2a08', '08083e0808', '0050300000', '0808080808', '0060600000', '2010080402',
  '3e5149453e', '00427f4000', '4261514946', '2141454b31', '1814127f10', '2745454539', '3c4a494930', '0171090503',
  '3649494936', '064949291e', '0036360000', '0056360000', '0814224100', '1414141414', '0041221408', '0201510906',
  '324979413e', '7e1111117e', '7f49494936', '3e41414122', '7f4141221c', '7f49494941', '7f09090101', '3e41415132',
  '7f0808087f', '00417f4100', '2040413f01', '7f08142241', '7f40404040', '7f020c027f', '7f0408107f', '3e4141413e',
  '7f09090906', '3e4151215e', '7f09192946', '4649494931', '01017f0101', '3f4040403f', '1f2040201f', '3f4038403f',
  '6314081463', '0708700807', '6151494543', '007f414100', '0204081020', '0041417f00', '0402010204', '4040404040',
  '0001020400', '2054545478', '7f48444438', '3844444420', '384444487f', '3854545418', '087e090102', '98a4a4a47c',
  '7f08040478', '00447d4000', '8080847d00', '007f102844', '00417f4000', '7c04180478', '7c08040478', '3844444438',
  'fc24242418', '18242424fc', '7c08040408', '4854545420', '043f444020', '3c4040207c', '1c2040201c', '3c4030403c',
  '4428102844', '9ca0a0a07c', '4464544c44', '0008364100', '00007f0000', '0041360800', '0201020402',
];

/**
 * Extra glyphs beyond ASCII that the bot itself emits in labels ("seed 42 · 3/12")
 * and ellipsis; keyed by the character they draw.
 */
const EXTRA_HEX: Record<string, string> = {
  '\u00b7': '0000080000', // middle dot
  '\u2026': '4000400040', // ellipsis in one cell, so truncation costs a single column
};

/** One horizontal run of lit pixels: row, first column, length. */
type Run = readonly [row: number, col: number, len: number];

const runCache = new Map<string, readonly Run[]>();

function decodeRuns(hex: string): Run[] {
  const cols: number[] = [];
  for (let c = 0; c < GLYPH_WIDTH; c++) cols.push(parseInt(hex.slice(c * 2, c * 2 + 2), 16));
  const runs: Run[] = [];
  // Merge horizontally adjacent pixels so each row becomes a few rectangles, not 5 squares.
  for (let r = 0; r < GLYPH_HEIGHT; r++) {
    let start = -1;
    for (let c = 0; c <= GLYPH_WIDTH; c++) {
      const on = c < GLYPH_WIDTH && ((cols[c] ?? 0) >> r) & 1;
      if (on && start < 0) start = c;
      if (!on && start >= 0) {
        runs.push([r, start, c - start]);
        start = -1;
      }
    }
  }
  return runs;
}

function glyphHex(ch: string): string | undefined {
  const code = ch.codePointAt(0) ?? 0;
  if (ch.length === 1 && code >= 0x20 && code <= 0x7e) return ASCII_HEX[code - 0x20];
  return EXTRA_HEX[ch];
}

function glyphRuns(ch: string): readonly Run[] {
  let runs = runCache.get(ch);
  if (!runs) {
    runs = decodeRuns(glyphHex(ch) ?? glyphHex('?') ?? '');
    runCache.set(ch, runs);
  }
  return runs;
}

/** Letters NFKD does not decompose, plus typographic punctuation people paste into prompts. */
const FOLD: Record<string, string> = {
  '\u00df': 'ss', '\u00e6': 'ae', '\u00c6': 'AE', '\u0153': 'oe', '\u0152': 'OE', '\u00f8': 'o', '\u00d8': 'O',
  '\u0111': 'd', '\u0110': 'D', '\u0142': 'l', '\u0141': 'L', '\u0131': 'i', '\u00f0': 'd', '\u00d0': 'D',
  '\u00fe': 'th', '\u00de': 'Th', '\u2018': "'", '\u2019': "'", '\u201a': "'", '\u201c': '"', '\u201d': '"',
  '\u201e': '"', '\u00ab': '"', '\u00bb': '"', '\u2010': '-', '\u2011': '-', '\u2012': '-', '\u2013': '-',
  '\u2014': '-', '\u2212': '-', '\u00d7': 'x', '\u2022': '\u00b7',
};

/** Upper bound on raw input we look at; enough for any layout, cheap for megabyte prompts. */
const MAX_INPUT_UNITS = 20_000;

/**
 * Fold arbitrary Unicode into characters this font can draw. Never throws: accents are
 * stripped (NFKD + drop combining marks), invisible/format characters (ZWJ, bidi marks,
 * BOM, controls) disappear, any whitespace becomes one space, everything else becomes '?'.
 * Stops after `maxChars` output characters because callers only ever show a few lines.
 */
export function toFontText(input: string, maxChars = 4000): string {
  const src = input.slice(0, MAX_INPUT_UNITS).normalize('NFKD');
  let out = '';
  let count = 0;
  let pendingSpace = false;
  for (const ch of src) {
    if (count >= maxChars) break;
    let mapped: string;
    // U+FEFF matches \s in JS but is an invisible BOM / zero-width no-break space.
    if (ch !== '\ufeff' && /\s/u.test(ch)) {
      pendingSpace = count > 0;
      continue;
    } else if (/[\p{M}\p{Cc}\p{Cf}]/u.test(ch)) {
      continue;
    } else if (glyphHex(ch) !== undefined) {
      mapped = ch;
    } else {
      mapped = FOLD[ch] ?? '?';
    }
    if (pendingSpace) {
      out += ' ';
      count++;
      pendingSpace = false;
    }
    out += mapped;
    count += [...mapped].length;
  }
  return out;
}

/**
 * Greedy word wrap of font-safe text into at most `maxLines` lines of `maxChars`.
 * Over-long words are hard-broken; overflow ends in a one-cell ellipsis.
 */
export function wrapText(text: string, maxChars: number, maxLines: number): string[] {
  const lines: string[] = [];
  let cur = '';
  outer: for (const w of text.split(' ')) {
    let word = w;
    while (word) {
      if (!cur) {
        cur = word.slice(0, maxChars);
        word = word.slice(maxChars);
        if (word) {
          lines.push(cur);
          cur = '';
        }
      } else if (cur.length + 1 + word.length <= maxChars) {
        cur += ' ' + word;
        word = '';
      } else {
        lines.push(cur);
        cur = '';
      }
      if (lines.length > maxLines) break outer;
    }
  }
  if (cur) lines.push(cur);
  if (lines.length <= maxLines) return lines;
  const kept = lines.slice(0, maxLines);
  const last = kept[maxLines - 1] ?? '';
  kept[maxLines - 1] = (last.length >= maxChars ? last.slice(0, maxChars - 1) : last).trimEnd() + '\u2026';
  return kept;
}

/** One line, cut with an ellipsis when longer than `maxChars`. */
export function truncateText(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : text.slice(0, Math.max(0, maxChars - 1)).trimEnd() + '\u2026';
}

/**
 * SVG path data drawing `text` (already passed through toFontText) with its top-left at
 * (x, y), each font pixel `scale` output pixels wide. Integer coordinates keep edges crisp.
 */
export function textPathData(text: string, x: number, y: number, scale: number): string {
  const parts: string[] = [];
  let cx = Math.round(x);
  const top = Math.round(y);
  for (const ch of text) {
    for (const [r, c, len] of glyphRuns(ch)) {
      const w = len * scale;
      parts.push(`M${cx + c * scale} ${top + r * scale}h${w}v${scale}h-${w}z`);
    }
    cx += ADVANCE * scale;
  }
  return parts.join('');
}
