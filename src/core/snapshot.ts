/**
 * Read-only snapshots of records the core hands out. The engine never changes a job in place: each
 * change makes a new record, frozen here, so a reader (an adapter, a metric, a test) may keep what it
 * was given without a later change moving under it, and cannot change the engine's state by mistake.
 */

/** Freezes a value and everything it holds, skipping parts already frozen (shared with an older snapshot). */
export function freeze<T>(value: T): Readonly<T> {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return value;
  Object.freeze(value);
  for (const child of Object.values(value)) freeze(child);
  return value;
}
