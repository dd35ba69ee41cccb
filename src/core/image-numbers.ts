/**
 * "Review by number": image numbers typed by a person (`1-5, 8, 12`), as the CLI, Discord's modal,
 * Slack's dialog and the review page take them. Read strictly: anything that is not a number or a
 * range of the job's images is refused in one line naming what was given.
 */
import type { Engine } from './engine.js';
import { UserError } from './errors.js';
import type { Reviewer } from './ports.js';
import { plural, truncate } from './text.js';
import type { Job } from './types.js';
import { numberRanges } from './views.js';

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

/** The two fields of "Review by number" (Discord's modal, Slack's dialog). */
export type NumberField = 'approve' | 'reject';
export const NUMBER_FIELD_LABELS: Readonly<Record<NumberField, string>> = { approve: 'Approve', reject: 'Reject' };
export const NO_NUMBERS = 'Give the numbers of images to approve or to reject, such as 1-5, 8.';

/** A "Review by number" refused, and which field it is about (Slack shows the line under that field). */
export class NumbersRefused extends UserError {
  constructor(
    readonly field: NumberField,
    message: string,
  ) {
    super('invalid_option', message);
  }
}

export interface NumberedReview {
  status: 'approved' | 'rejected';
  numbers: number[];
}

const STATUS_OF: Readonly<Record<NumberField, NumberedReview['status']>> = { approve: 'approved', reject: 'rejected' };

/**
 * Both fields of a "Review by number" as the reviews to make, read whole before anything moves: bad
 * input, a number whose image was never made, a number under both fields, or two empty fields is a
 * NumbersRefused (one line, naming its field) and nothing is reviewed.
 */
export function readReviewNumbers(job: Pick<Job, 'request' | 'images'>, fields: Partial<Record<NumberField, string>>): NumberedReview[] {
  const last = Math.max(job.request.count, ...job.images.map((image) => image.index));
  const made = new Set(job.images.map((image) => image.index));
  const reviews: NumberedReview[] = [];
  for (const field of ['approve', 'reject'] as const) {
    const value = fields[field] ?? '';
    if (value.trim() === '') continue;
    let numbers: number[];
    try {
      numbers = parseImageNumbers(value, last, NUMBER_FIELD_LABELS[field]);
    } catch (error) {
      if (error instanceof UserError) throw new NumbersRefused(field, error.message);
      throw error;
    }
    // A slot whose batch failed has no image: refused here, so neither field is applied in part.
    const missing = numbers.filter((n) => !made.has(n));
    if (missing.length > 0) {
      const which = missing.length === 1 ? `image ${missing[0]} was` : `images ${numberRanges(missing)} were`;
      throw new NumbersRefused(field, `${NUMBER_FIELD_LABELS[field]}: ${which} not made, so there is nothing to review.`);
    }
    reviews.push({ status: STATUS_OF[field], numbers });
  }
  if (reviews.length === 0) throw new NumbersRefused('approve', NO_NUMBERS);
  const [approve, reject] = reviews;
  const both = approve && reject ? approve.numbers.filter((n) => reject.numbers.includes(n)) : [];
  if (both.length > 0) {
    throw new NumbersRefused('reject', `${both.length === 1 ? `Image ${both[0]} is` : `Images ${numberRanges(both)} are`} under both Approve and Reject: choose one.`);
  }
  return reviews;
}

/**
 * Makes the reviews one after the other; answers the confirmation (`Approved 6 images (1-5, 8).`), which
 * ends with the reason when one is refused meanwhile (the job changed since the numbers were read).
 */
export async function applyNumberedReviews(engine: Pick<Engine, 'reviewMany'>, jobId: string, reviews: readonly NumberedReview[], by: Reviewer): Promise<string> {
  const lines: string[] = [];
  try {
    for (const { status, numbers } of reviews) {
      await engine.reviewMany(jobId, numbers, status, by);
      lines.push(`${status === 'approved' ? 'Approved' : 'Rejected'} ${plural(numbers.length, 'image')} (${numberRanges(numbers)}).`);
    }
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    lines.push(error.message);
  }
  return lines.join(' ');
}
