/**
 * "Review by number": image numbers typed by a person (`1-5, 8, 12`), as the CLI, Discord's modal,
 * Slack's dialog and the review page take them. Read strictly: anything that is not a number or a
 * range of the job's images is refused in one line naming what was given.
 */
import { UserError } from './errors.js';
import { truncate } from './text.js';

/** The most characters read: a list longer than this is not one a person typed. */
export const IMAGE_NUMBERS_MAX_CHARS = 2000;

const PART = /^([1-9][0-9]{0,6})(?:-([1-9][0-9]{0,6}))?$/;

/**
 * The numbers in `text` (commas or spaces between parts, `a-b` for a range), ascending and once each.
 * `images`: how many the job has; a number above it, an empty list, or a backwards range is refused.
 */
export function parseImageNumbers(text: string, images: number, option = 'numbers'): number[] {
  const shown = `"${truncate(text.replace(/\s+/g, ' ').trim(), 60)}"`;
  const example = images >= 8 ? '1-5, 8' : images > 1 ? `1-${images}` : '1';
  const expected = `${option}: expected image numbers from 1 to ${images} such as ${example}`;
  if (text.length > IMAGE_NUMBERS_MAX_CHARS) throw new UserError('invalid_option', `${expected}, got a list of ${text.length} characters`);
  const parts = text.replace(/\s*-\s*/g, '-').split(/[,;\s]+/).filter(Boolean);
  const numbers = new Set<number>();
  for (const part of parts) {
    const match = PART.exec(part);
    const from = Number(match?.[1]);
    const to = Number(match?.[2] ?? match?.[1]);
    if (!match || to < from) throw new UserError('invalid_option', `${expected}, got "${truncate(part, 30)}"${parts.length > 1 ? ` in ${shown}` : ''}`);
    if (to > images) throw new UserError('invalid_option', `${expected}; this job has no image ${to > from && from <= images ? to : from}`);
    for (let n = from; n <= to; n += 1) numbers.add(n);
  }
  if (numbers.size === 0) throw new UserError('invalid_option', `${expected}, got ${text.trim() === '' ? 'nothing' : shown}`);
  return [...numbers].sort((a, b) => a - b);
}
