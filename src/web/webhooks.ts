/**
 * The webhook routes of the public server: `POST /webhooks/fal` and `POST /webhooks/replicate`, each
 * handing the raw body and headers to the receiver (src/providers/webhooks.ts), which checks them and
 * answers.
 */
import type { WebhookReceiver } from '../providers/webhooks.js';
import type { Route } from './server.js';

export function webhookRoutes(receiver: WebhookReceiver): Route[] {
  return (['fal', 'replicate'] as const).map((provider) => ({
    method: 'POST',
    path: `/webhooks/${provider}`,
    handle: async ({ body, headers }) => receiver.receive(provider, { body, headers }),
  }));
}
