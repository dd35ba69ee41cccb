/**
 * Who counts as a moderator in a Slack workspace: the user ids configured in SLACK_REVIEWERS, and
 * workspace admins and owners (users.info). Answers are cached briefly, so a burst of clicks costs one
 * users.info call (Tier 4), while a demoted admin loses the right within a minute.
 */
import type { webApi } from '@slack/bolt';

interface Cached {
  moderator: boolean;
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
    const cached = this.cache.get(userId);
    if (cached && cached.until > this.now()) return cached.moderator;
    let moderator: boolean;
    try {
      const { user } = await client.users.info({ user: userId });
      moderator = Boolean(user && !user.deleted && (user.is_admin || user.is_owner || user.is_primary_owner));
    } catch (error) {
      // Unknown means no: a failed lookup must never grant a right.
      this.onError(userId, error);
      return false;
    }
    if (this.cache.size > 5_000) this.cache.clear();
    this.cache.set(userId, { moderator, until: this.now() + this.ttlMs });
    return moderator;
  }
}
