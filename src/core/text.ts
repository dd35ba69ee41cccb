/**
 * Text helpers shared by every layer: cutting to a length, one-line error texts, plurals, and a
 * readable form of a value that came from outside. Cuts count code points, never splitting a
 * character in two, and end in "…".
 */

/** The longest error text shown to users: one line, so a provider cannot fill a message with its page. */
export const ERROR_LINE_MAX = 200;

/** At most `max` characters (code points), ending in "…" when cut. */
export function truncate(text: string, max: number): string {
  const chars = Array.from(text);
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

/** At most `max` UTF-16 units (what a platform's length limit counts), never half a surrogate pair. */
export function truncateUnits(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1).replace(/[\uD800-\uDBFF]$/, '')}…`;
}

/** Runs of white space folded into one space, then cut to `max` characters. */
export function shorten(text: string, max: number): string {
  return truncate(text.replace(/\s+/g, ' ').trim(), max);
}

/**
 * Any text from outside (a provider's or image host's error) as one line of at most `max` characters.
 * Line breaks, other control characters and bidi overrides become spaces, so the text cannot start
 * lines of its own or turn itself around. Adapters escape after this: cutting an escaped text could
 * split an entity.
 */
export function oneLine(text: string, max = ERROR_LINE_MAX): string {
  const chars = Array.from(text.replace(/[\s\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069]+/gu, ' ').trim());
  return chars.length <= max ? chars.join('') : `${chars.slice(0, max - 1).join('').trimEnd()}…`;
}

/** `1 image`, `2 images`. */
export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** A value from outside (an error field that may be a string, an object or anything) as text. */
export function textOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.message;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}
