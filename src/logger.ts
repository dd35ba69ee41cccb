/**
 * pino, with every place a secret could travel redacted: config values, HTTP headers, and any key
 * named like a credential, however deep. Tokens are never logged, even at debug level.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export const REDACT_PATHS = [
  'token',
  'key',
  'secret',
  'password',
  'authorization',
  '*.token',
  '*.key',
  '*.botToken',
  '*.appToken',
  '*.signingSecret',
  '*.secret',
  '*.password',
  '*.authorization',
  '*.Authorization',
  'headers.authorization',
  'headers.Authorization',
  '*.headers.authorization',
  '*.headers.Authorization',
  'config.discord.token',
  'config.slack.botToken',
  'config.slack.signingSecret',
  'config.slack.appToken',
  'config.fal.key',
  'config.stability.key',
  'config.openai.key',
  'config.civitai.token',
  'config.replicate.token',
  'config.replicate.webhookSecret',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: undefined,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      serializers: { err: pino.stdSerializers.err },
    },
    destination ?? pino.destination(2),
  );
}

export type { Logger };
