/**
 * Who counts as a moderator in a Slack workspace: the user ids configured in SLACK_REVIEWERS, and
 * workspace admins and owners (users.info); only the latter may change the workspace's /settings. Answers are cached briefly, so a burst of clicks costs one
 * users.info call (Tier 4), while a demoted admin loses the right within a minute.
 */
import type { webApi } from '@slack/bolt';
import { mayAct } from '../../core/actions.js';
import type { Job } from '../../core/types.js';

interface Cached {
  admin: boolean;
  until: number;
}

export class Moderators {
  private readonly cache = new Map<string, Cached>();

  constructor(
    private readonly reviewers: ReadonlySet<string>,
    private readonly onError: (userId: string, error: unknown) => void,
    private readonly ttlMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  async isModerator(client: webApi.WebClient, userId: string): Promise<boolean> {
    if (this.reviewers.has(userId)) return true;
    return this.isAdmin(client, userId);
  }

  /** A workspace admin or owner, as users.info says (SLACK_REVIEWERS do not count). */
  async isAdmin(client: webApi.WebClient, userId: string): Promise<boolean> {
    const cached = this.cache.get(userId);
    if (cached && cached.until > this.now()) return cached.admin;
    let admin: boolean;
    try {
      const { user } = await client.users.info({ user: userId });
      admin = Boolean(user && !user.deleted && (user.is_admin || user.is_owner || user.is_primary_owner));
    } catch (error) {
      // Unknown means no: a failed lookup must never grant a right.
      this.onError(userId, error);
      return false;
    }
    if (this.cache.size > 5_000) this.cache.clear();
    this.cache.set(userId, { admin, until: this.now() + this.ttlMs });
    return admin;
  }
}

/**
 * May `userId` of `team` review or cancel `job`: its requester, or a moderator of the same team. Used
 * by every button and by the "Review by number" dialog's submission. `moderator` is what the link to
 * the review page records.
 */
export async function mayReview(
  job: Pick<Job, 'requester'>,
  userId: string,
  team: string | undefined,
  client: webApi.WebClient,
  moderators: Moderators,
): Promise<{ allowed: boolean; moderator: boolean }> {
  if (!team || job.requester.tenant !== team) return { allowed: false, moderator: false };
  const moderator = job.requester.userId !== userId && (await moderators.isModerator(client, userId));
  return { allowed: mayAct(job, { userId, moderator }, team), moderator };
}
