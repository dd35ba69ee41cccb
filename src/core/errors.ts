/**
 * An expected failure that is the user's to fix or to wait out: it is answered to them as it is
 * (ephemeral on chat platforms), never logged as a crash.
 */
export type UserErrorCode =
  | 'invalid_option'
  | 'unknown_option'
  | 'provider_unavailable'
  | 'queue_full'
  | 'quota'
  | 'not_found'
  | 'forbidden'
  | 'already_finished'
  /** the same command delivered twice (a replayed Slack request): it runs once */
  | 'duplicate';

export class UserError extends Error {
  override name = 'UserError';
  constructor(
    readonly code: UserErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function isUserError(error: unknown): error is UserError {
  return error instanceof UserError;
}

/**
 * What a user is told when something that is not theirs to fix went wrong: the one wording every
 * platform and the CLI use. The details go to the log, never to the chat.
 */
export const GENERIC_FAILURE = 'Something went wrong on our side; the details are in the log.';
