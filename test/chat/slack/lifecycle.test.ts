import { describe, expect, it } from 'vitest';
import { startSlack } from '../../../src/chat/slack/index.js';
import { createLogger } from '../../../src/logger.js';
import { startFakeSlack } from '../../fakes/slack.js';
import { buildApp, onCleanup } from '../../helpers.js';
import { SECRET, slackHarness } from './harness.js';

describe('Slack adapter lifecycle', () => {
  it('refuses to start with a token Slack does not accept, naming the variable but not the token', async () => {
    const fake = await startFakeSlack({ tokens: ['xoxb-the-right-one'] });
    onCleanup(() => fake.close());
    const app = await buildApp({ env: { SLACK_BOT_TOKEN: 'xoxb-test', SLACK_SIGNING_SECRET: SECRET, SLACK_API_URL: fake.apiUrl } });
    const failure = await startSlack(app, { port: 0, host: '127.0.0.1' }).then(() => undefined, (error: Error) => error);
    expect(failure?.message).toBe('SLACK_BOT_TOKEN: Slack did not accept the token (invalid_auth)');
    expect(fake.calls().map((c) => c.method)).toEqual(['auth.test']);
  });

  it('is healthy while it runs; stop() closes the port; nothing it logs carries the token or the signing secret', async () => {
    const lines: string[] = [];
    const logger = createLogger('trace', { write: (line: string) => void lines.push(line) });
    const h = await slackHarness({ logger, fakeOptions: { tokens: ['xoxb-test'] } });
    expect(h.adapter.healthy()).toBe(true);
    expect(h.adapter.name).toBe('slack');

    await h.imagine('a fox --count 2');
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);
    expect(JSON.parse((await h.imagine('a fox --count 0')).body).response_type).toBe('ephemeral');

    await h.adapter.stop();
    expect(h.adapter.healthy()).toBe(false);
    await expect(fetch(h.url, { method: 'POST' })).rejects.toThrow();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.join('\n')).toContain('slack adapter started');
    expect(lines.join('\n')).not.toContain('xoxb-test');
    expect(lines.join('\n')).not.toContain(SECRET);
  });
});
