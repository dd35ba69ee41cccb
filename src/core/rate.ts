/** A rate such as `600/min`: at most `limit` calls in any window of `intervalMs`. */
export interface Rate {
  limit: number;
  intervalMs: number;
}

const UNITS: Record<string, number> = { s: 1_000, sec: 1_000, min: 60_000, m: 60_000, h: 3_600_000, hour: 3_600_000 };

/**
 * Parses `10/s`, `600/min`, `1000/h`. Empty means "no limit" (undefined).
 * Throws a message that says what was expected and what was given.
 */
export function parseRate(text: string | undefined): Rate | undefined {
  const value = (text ?? '').trim();
  if (value === '' || value === 'none') return undefined;
  const match = /^(\d+)\s*\/\s*([a-z]+)$/i.exec(value);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  const limit = match ? Number(match[1]) : NaN;
  if (!match || unit === undefined || !Number.isSafeInteger(limit) || limit < 1) {
    throw new Error(`expected a rate written N/s, N/min or N/h with N ≥ 1 (e.g. 600/min), got "${value}"`);
  }
  return { limit, intervalMs: unit };
}
