/**
 * Offline, deterministic image renderer behind the `local` provider.
 *
 * prompt + seed → an abstract composition (gradient sky, soft glowing blobs, layered
 * waves, sparkles) with the prompt printed on a dark caption band. Everything is built
 * as one small SVG string and rasterised by sharp, so the only inputs are the options:
 * no network, no API key, no system fonts (text uses ./bitmap-font.ts), no clock, no
 * Math.random. Identical options therefore give byte-identical output for a given
 * sharp/libvips build.
 */
import sharp from 'sharp';
import { ADVANCE, GLYPH_HEIGHT, textPathData, toFontText, truncateText, wrapText } from './bitmap-font.js';

export interface RenderOptions {
  prompt: string;
  /** 0..2^32-1 */
  seed: number;
  width: number;
  height: number;
  /** Default 'png'. */
  format?: 'png' | 'webp' | 'jpeg';
  /** 1–100 for webp and jpeg @default 90 */
  quality?: number;
  /** Small second line under the prompt, e.g. "seed 42 · 3/12". */
  label?: string;
}

/** Larger canvases would cost hundreds of MB of RGBA while rasterising. */
const MAX_SIDE = 8192;
const MAX_PROMPT_LINES = 4;
/** The blurry back layer is rendered this many times smaller, then upscaled. */
const BACK_SCALE = 4;
const BACK_MAX_SIDE = 512;

/** FNV-1a over UTF-16 code units: stable across platforms, no dependency on encodings. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** murmur3 finaliser, used to decorrelate the prompt hash from small sequential seeds. */
function fmix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Colour words steer the base hue so "a red fox" actually comes out reddish. */
const HUE_WORDS: ReadonlyArray<readonly [RegExp, number]> = [
  [/\b(red|crimson|scarlet|fire|blood)\b/, 2], [/\b(orange|sunset|autumn|amber)\b/, 28],
  [/\b(gold|golden|yellow|sun|desert|sand)\b/, 45], [/\b(green|forest|jungle|leaf|grass|moss)\b/, 125],
  [/\b(teal|turquoise|cyan|lagoon)\b/, 178], [/\b(blue|ocean|sea|sky|ice|snow|winter|night)\b/, 215],
  [/\b(purple|violet|lavender|galaxy|cosmic)\b/, 270], [/\b(pink|magenta|rose|cherry)\b/, 325],
];

function baseHue(prompt: string, rnd: () => number): number {
  const lower = prompt.slice(0, 2000).toLowerCase();
  let best = -1;
  let hue = rnd() * 360;
  // Earliest colour word wins: "a red fox in snow" is about the red fox, not the snow.
  for (const [re, h] of HUE_WORDS) {
    const i = lower.search(re);
    if (i >= 0 && (best < 0 || i < best)) {
      best = i;
      hue = h + (rnd() - 0.5) * 24;
    }
  }
  return (hue + 360) % 360;
}

function hsl(h: number, s: number, l: number): string {
  // Explicit conversion to hex keeps the SVG renderer-agnostic and the string short.
  const a = (s / 100) * Math.min(l / 100, 1 - l / 100);
  const f = (n: number): string => {
    const k = (n + h / 30) % 12;
    const c = l / 100 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(c * 255).toString(16).padStart(2, '0');
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

const n1 = (v: number): string => (Math.round(v * 10) / 10).toString();

/**
 * The picture, split in two layers for speed: `back` holds only smooth, blurry content
 * (gradient, glow blobs, vignette) and is rasterised at 1/BACK_SCALE resolution then
 * upscaled, which looks identical but cuts the costly radial-gradient fill ~16x; `front`
 * holds the crisp shapes (waves, rings, sparkles) and is drawn at full resolution.
 * Both use the same W×H coordinate system; only the back layer's pixel size differs.
 */
function composition(prompt: string, seed: number, W: number, H: number): { back: string; front: string } {
  const rnd = mulberry32(fmix32(hashString(prompt) ^ fmix32(seed + 0x9e3779b9)));
  const hue = baseHue(prompt, rnd);
  // Harmonious offsets: analogous, complementary, split-complementary, triadic.
  const schemes = [[0, 30, -35], [0, 180, 25], [0, 150, 210], [0, 120, 240]] as const;
  const offs = schemes[Math.floor(rnd() * schemes.length)] ?? schemes[0];
  const hues = offs.map((o) => (hue + o + 360) % 360);
  const [h0, h1, h2] = [hues[0] ?? 0, hues[1] ?? 0, hues[2] ?? 0];
  const sat = 55 + rnd() * 30;
  const M = Math.min(W, H);
  const defs: string[] = [];
  const back: string[] = [];
  const front: string[] = [];

  // h0 (the prompt's colour when it names one) dominates; h1/h2 are accents.
  // Background: three-stop linear gradient at a random angle, dark at one end for depth.
  const ang = rnd() * Math.PI * 2;
  const r = Math.hypot(W, H) / 2;
  const [dx, dy] = [Math.cos(ang) * r, Math.sin(ang) * r];
  defs.push(
    `<linearGradient id="bg" gradientUnits="userSpaceOnUse" x1="${n1(W / 2 - dx)}" y1="${n1(H / 2 - dy)}" x2="${n1(W / 2 + dx)}" y2="${n1(H / 2 + dy)}">` +
      `<stop offset="0" stop-color="${hsl(h2, sat, 12 + rnd() * 10)}"/>` +
      `<stop offset="${n1(0.4 + rnd() * 0.2)}" stop-color="${hsl(h0, sat, 32 + rnd() * 14)}"/>` +
      `<stop offset="1" stop-color="${hsl(h0 + (rnd() - 0.5) * 30, sat, 52 + rnd() * 14)}"/></linearGradient>`,
  );
  back.push(`<rect width="${W}" height="${H}" fill="url(#bg)"/>`);

  // Soft blobs: radial gradients that fade to transparent look like blurred light without
  // an expensive feGaussianBlur pass.
  const blobs = 5 + Math.floor(rnd() * 4);
  for (let i = 0; i < blobs; i++) {
    const hh = i % 2 === 0 ? h0 : i % 4 === 1 ? h1 : h2;
    const col = hsl(hh + (rnd() - 0.5) * 20, Math.min(95, sat + 10), 55 + rnd() * 20);
    defs.push(
      `<radialGradient id="b${i}"><stop offset="0" stop-color="${col}" stop-opacity="${n1(0.5 + rnd() * 0.4)}"/>` +
        `<stop offset="1" stop-color="${col}" stop-opacity="0"/></radialGradient>`,
    );
    const rad = M * (0.12 + rnd() * 0.33);
    back.push(`<circle cx="${n1(rnd() * W)}" cy="${n1(rnd() * H * 0.8)}" r="${n1(rad)}" fill="url(#b${i})"/>`);
  }

  // A thin ring or two gives the eye a focal point.
  const rings = 1 + Math.floor(rnd() * 2);
  for (let i = 0; i < rings; i++) {
    const rr = M * (0.08 + rnd() * 0.22);
    front.push(
      `<circle cx="${n1(W * (0.2 + rnd() * 0.6))}" cy="${n1(H * (0.15 + rnd() * 0.4))}" r="${n1(rr)}" fill="none" ` +
        `stroke="${hsl(h1, 40, 88)}" stroke-opacity="${n1(0.15 + rnd() * 0.25)}" stroke-width="${n1(Math.max(1, M * 0.004))}"/>`,
    );
  }

  // Layered waves, back to front and darker towards the front, like distant hills.
  const waves = 2 + Math.floor(rnd() * 2);
  for (let k = 0; k < waves; k++) {
    const base = H * (0.5 + (0.3 * k) / waves) + (rnd() - 0.5) * H * 0.06;
    const amp = H * (0.03 + rnd() * 0.06);
    const segs = 2 + Math.floor(rnd() * 3);
    const step = W / segs;
    let d = `M0 ${n1(base)}Q${n1(step / 2)} ${n1(base - amp * (rnd() * 2 - 1) * 2)} ${n1(step)} ${n1(base)}`;
    for (let s = 2; s <= segs; s++) d += `T${n1(step * s)} ${n1(base + (rnd() - 0.5) * amp)}`;
    d += `V${H}H0Z`;
    const col = hsl(k === 0 ? h1 : k === 1 ? h0 : h2, sat * 0.8, 30 - k * 7 + rnd() * 8);
    front.push(`<path d="${d}" fill="${col}" fill-opacity="${n1(0.45 + k * 0.15)}"/>`);
  }

  // Sparkles in the upper part of the frame.
  const sparks = 14 + Math.floor(rnd() * 24);
  const dots: string[] = [];
  for (let i = 0; i < sparks; i++) {
    const sr = Math.max(0.6, M * (0.0015 + rnd() * 0.004));
    dots.push(`<circle cx="${n1(rnd() * W)}" cy="${n1(rnd() * H * 0.6)}" r="${n1(sr)}" fill-opacity="${n1(0.25 + rnd() * 0.6)}"/>`);
  }
  front.push(`<g fill="#fff">${dots.join('')}</g>`);

  // Vignette pulls attention to the centre and hides hard gradient edges. It lives in the
  // back layer (under the waves) because a full-frame radial fill at full size is slow.
  defs.push(
    `<radialGradient id="vg" cx="0.5" cy="0.45" r="0.75"><stop offset="0.55" stop-color="#000" stop-opacity="0"/>` +
      `<stop offset="1" stop-color="#000" stop-opacity="0.45"/></radialGradient>`,
  );
  back.push(`<rect width="${W}" height="${H}" fill="url(#vg)"/>`);
  return { back: `<defs>${defs.join('')}</defs>${back.join('')}`, front: front.join('') };
}

/** The caption band: dark translucent strip at the bottom with the prompt and label. */
function caption(prompt: string, label: string, W: number, H: number): string {
  // ~40 characters per line on typical canvases; the label is about half size but never
  // below 2x when there is room, since 1x pixels are hard to read on a phone.
  const s = Math.max(1, Math.min(8, Math.floor(Math.min(W, H * 2) / 250)));
  const ls = s <= 2 ? s : Math.round(s * 0.55);
  const pad = 4 * s;
  const lineH = GLYPH_HEIGHT * s + 3 * s;
  const labelH = (GLYPH_HEIGHT + 1) * ls;
  const gap = 3 * s; // between prompt lines, and between the prompt and the label
  const text = toFontText(prompt);
  const lab = toFontText(label, 1000);
  if (!text && !lab) return '';
  // Text never takes more than about half the frame, so the picture stays the picture.
  const room = H * 0.5 - 2 * pad - (lab ? labelH + gap : 0);
  const maxLines = Math.max(1, Math.min(MAX_PROMPT_LINES, Math.floor(room / lineH)));
  const lines = text ? wrapText(text, Math.max(1, Math.floor((W - 2 * pad + s) / (ADVANCE * s))), maxLines) : [];
  const labLine = lab ? truncateText(lab, Math.max(1, Math.floor((W - 2 * pad + ls) / (ADVANCE * ls)))) : '';

  const textBlock = lines.length ? lines.length * lineH - gap : 0;
  const labelTop = textBlock + (lines.length ? gap : 0);
  const bandH = 2 * pad + (labLine ? labelTop + labelH : textBlock);
  const top = H - bandH;
  let d = '';
  lines.forEach((line, i) => {
    d += textPathData(line, pad, top + pad + i * lineH, s);
  });
  const labD = labLine ? textPathData(labLine, pad, top + pad + labelTop, ls) : '';
  const fade = Math.min(top, pad * 3);
  const sh = Math.max(1, Math.round(s / 2));
  const parts = [
    `<defs><linearGradient id="fd" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-opacity="0"/>` +
      `<stop offset="1" stop-opacity="0.58"/></linearGradient></defs>`,
    fade > 0 ? `<rect y="${top - fade}" width="${W}" height="${fade}" fill="url(#fd)"/>` : '',
    `<rect y="${top}" width="${W}" height="${bandH}" fill="#000" fill-opacity="0.58"/>`,
  ];
  // A 1-step drop shadow keeps the light glyphs readable even on very bright backgrounds.
  if (d) parts.push(`<path d="${d}" transform="translate(${sh} ${sh})" fill="#000" fill-opacity="0.6"/><path d="${d}" fill="#f4f4f0"/>`);
  if (labD) parts.push(`<path d="${labD}" fill="#c9ccd6"/>`);
  return parts.join('');
}

function checkDim(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) throw new RangeError(`${name} must be an integer in 1..${MAX_SIDE}, got ${v}`);
}

/**
 * Validate options and build the two SVG documents (see composition()). The front
 * document is returned as a function of the back layer's image URI, because the back
 * layer must be rasterised first.
 */
function buildLayers(options: RenderOptions): { back: string; front: (backHref: string) => string } {
  const { width: W, height: H } = options;
  checkDim('width', W);
  checkDim('height', H);
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) {
    throw new RangeError(`seed must be an integer in 0..4294967295, got ${options.seed}`);
  }
  // Callers from plain JS may hand us null/undefined; treat that as empty text, not a crash.
  const prompt = typeof options.prompt === 'string' ? options.prompt : '';
  const label = typeof options.label === 'string' ? options.label : '';
  const layers = composition(prompt, options.seed, W, H);
  const text = caption(prompt, label, W, H);
  // Keep the back layer <= BACK_MAX_SIDE so its data URI stays far below librsvg's input limits.
  const k = Math.max(BACK_SCALE, Math.ceil(Math.max(W, H) / BACK_MAX_SIDE));
  const open = (w: number, h: number): string =>
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none">`;
  return {
    back: `${open(Math.ceil(W / k), Math.ceil(H / k))}${layers.back}</svg>`,
    front: (href) =>
      `${open(W, H)}<image width="${W}" height="${H}" preserveAspectRatio="none" href="${href}"/>${layers.front}${text}</svg>`,
  };
}

/** Render prompt + seed into an image of exactly width×height. Pure function of `options`. */
export async function renderLocalImage(options: RenderOptions): Promise<Buffer> {
  const { back, front } = buildLayers(options);
  // density 72 = 1 SVG unit per pixel. The small back layer goes in as a fast, lossless
  // PNG and is stretched by the SVG renderer while drawing the front layer; this single
  // pass measured faster than a sharp resize + composite, and output is exactly
  // width×height. The canvas is opaque, so alpha is dropped: smaller files, and JPEG
  // needs no flattening.
  const backPng = await sharp(Buffer.from(back), { density: 72 }).removeAlpha().png({ compressionLevel: 1 }).toBuffer();
  const svg = front(`data:image/png;base64,${backPng.toString('base64')}`);
  const img = sharp(Buffer.from(svg), { density: 72 }).removeAlpha();
  switch (options.format ?? 'png') {
    case 'webp':
      // effort 2 halves encode time versus the default with no visible loss on soft art.
      return img.webp({ quality: options.quality ?? 90, effort: 2 }).toBuffer();
    case 'jpeg':
      return img.jpeg({ quality: options.quality ?? 90 }).toBuffer();
    default:
      return img.png().toBuffer();
  }
}
