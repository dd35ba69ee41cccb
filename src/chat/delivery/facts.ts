/**
 * What a platform's delivery keeps in `job.chat[platform]`, so a restarted process edits the same
 * messages and continues a gallery where it stopped: the platform's target fields (where the progress
 * message is), `pages` (one record per gallery page posted) and `delivered` (every page is posted).
 * Read defensively — the store outlives versions of this code: a target that does not fit its schema
 * means "no message yet", a page that does not fit is posted again.
 */
import { z } from 'zod';

export interface Facts<T, P> {
  target: T | undefined;
  /** index 0 = page 1 */
  pages: (P | undefined)[];
  delivered: boolean;
}

const gallery = z.object({ pages: z.array(z.unknown()).catch([]), delivered: z.boolean().catch(false) }).partial();

export function readFacts<T, P>(raw: unknown, target: z.ZodType<T>, page?: z.ZodType<P>): Facts<T, P> {
  const rest = gallery.safeParse(raw);
  return {
    target: target.safeParse(raw).data,
    pages: page ? (rest.data?.pages ?? []).map((record) => page.safeParse(record).data) : [],
    delivered: rest.data?.delivered === true,
  };
}
