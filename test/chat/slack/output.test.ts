import { describe, expect, it } from 'vitest';
import { ERROR_LINE_MAX as ERROR_TEXT_MAX } from '../../../src/core/text.js';
import { ProviderError, type BatchCall } from '../../../src/core/provider.js';
import { LocalProvider } from '../../../src/providers/local.js';
import { pollUntil } from '../../fakes/http.js';
import type { SlackCall } from '../../fakes/slack.js';
import { button, slackHarness, textsOf, unescapeMrkdwn } from './harness.js';

const unescape = unescapeMrkdwn;

/**
 * A provider whose error text is long, spread over lines, and marked to be found again. The core
 * caps batch errors too (views.oneLine); these tests hold for the whole path, and render.test.ts
 * checks the Slack side on its own with records the core did not cap.
 */
const LONG_ERROR = `UPSTREAM line one\nsecond line\r\n\n\tthird <line> & ${'x'.repeat(300)} TAIL`;

class FailingProvider extends LocalProvider {
  override async submit(call: BatchCall): Promise<string> {
    if (call.prompt.startsWith('doomed')) throw new ProviderError('invalid', LONG_ERROR);
    if (call.prompt.startsWith('partly') && call.count === 2) throw new ProviderError('invalid', LONG_ERROR);
    if (call.prompt.startsWith('first-fails') && call.count === 4) throw new ProviderError('invalid', LONG_ERROR);
    return super.submit(call);
  }
}

/** The error as the user reads it in one call: one line, from the marker to its "…". */
function shownErrors(call: Pick<SlackCall, 'args'>): string[] {
  const shown: string[] = [];
  for (const text of textsOf(call.args)) {
    for (const line of unescape(text).split('\n')) {
      const at = line.indexOf('UPSTREAM');
      if (at < 0) continue;
      expect(line).not.toContain('TAIL');
      const cut = line.indexOf('…', at);
      expect(cut).toBeGreaterThan(at);
      shown.push(line.slice(at, cut + 1));
    }
  }
  return shown;
}

describe('what the Slack adapter posts', () => {
  it('every chat.postMessage, chat.update and chat.postEphemeral, every ack and response_url answer goes out with unfurling off', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '150', USER_MAX_ACTIVE_JOBS: '1' } });
    await h.imagine('a fox at https://example.com/fox.png --count 6');
    const { ts, jobId } = await h.progressPost();
    // While it runs: a second job is refused through response_url, a bad option in the ack.
    await h.imagine('another fox --count 1', { response_url: h.fake.responseUrl('quota') });
    const bad = JSON.parse((await h.imagine('a fox --count 0')).body) as Record<string, unknown>;
    expect(bad).toMatchObject({ response_type: 'ephemeral', unfurl_links: false, unfurl_media: false });
    await h.delivered(jobId);
    // Someone else's click is answered with an ephemeral message.
    const page = h.fake.thread('C1', ts)[0]!;
    const since = h.fake.lastSeq;
    await h.click(page, button(page, 'Approve', 1), 'U2');
    await h.fake.waitFor((c) => c.method === 'chat.postEphemeral', { since });

    const [response] = h.fake.responses('quota');
    expect(response?.body).toMatchObject({ response_type: 'ephemeral', unfurl_links: false, unfurl_media: false });
    for (const method of ['chat.postMessage', 'chat.update', 'chat.postEphemeral']) {
      const calls = h.fake.calls(method);
      expect(calls.length, method).toBeGreaterThan(0);
      // Form-encoded by the WebClient: booleans arrive as the strings Slack reads.
      for (const call of calls) expect({ method, unfurl_links: call.args.unfurl_links, unfurl_media: call.args.unfurl_media }).toEqual({ method, unfurl_links: 'false', unfurl_media: 'false' });
    }
  });

  it('a prompt with a channel ping, a disguised link and a user mention shows them as plain text', async () => {
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '100' } });
    const prompt = '<!channel> <https://evil.example|Claim Nitro> <@U123> & <!here>';
    await h.imagine(`${prompt} --count 1`);
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);
    expect((await h.app.engine.get(jobId))?.request.prompt).toBe(prompt);
    const calls = [...h.fake.calls('chat.postMessage'), ...h.fake.calls('chat.update')];
    const texts = calls.flatMap((c) => textsOf(c.args));
    expect(texts.some((t) => t.includes('&lt;!channel&gt; &lt;https://evil.example|Claim Nitro&gt; &lt;@U123&gt; &amp; &lt;!here&gt;'))).toBe(true);
    for (const forbidden of ['<!channel>', '<!here>', '<https://evil.example', '<@U123>']) {
      expect(texts.filter((t) => t.includes(forbidden)), forbidden).toEqual([]);
    }
  });

  it('a failed batch’s provider error is one line of at most 200 characters in the summary', async () => {
    const h = await slackHarness({ providers: { local: new FailingProvider({ latencyMs: 20 }) } });
    await h.imagine('partly a fox --count 6');
    const { ts, jobId } = await h.progressPost();
    await h.delivered(jobId);
    const final = h.fake.message('C1', ts)!;
    const shown = shownErrors({ args: { text: final.text, blocks: final.blocks } });
    expect(shown).toHaveLength(1);
    expect(Array.from(shown[0]!).length).toBeLessThanOrEqual(ERROR_TEXT_MAX);
    expect(shown[0]).toMatch(/^UPSTREAM line one second line third <line> & x+…$/);
    expect(JSON.stringify(final.blocks)).toContain('Batch 2: 2 images not made (UPSTREAM line one second line third &lt;line&gt; &amp; x');
  });

  it('while a job runs, its failure lines are one line of at most 200 characters too', async () => {
    const h = await slackHarness({ providers: { local: new FailingProvider({ latencyMs: 400 }) } });
    await h.imagine('first-fails a fox --count 6');
    const { ts, jobId } = await h.progressPost();
    await h.delivered(jobId);
    const running = h.fake.calls('chat.update').filter((c) => c.args.ts === ts && !JSON.stringify(c.args.blocks).includes('Done'));
    const shown = running.flatMap(shownErrors);
    expect(shown.length).toBeGreaterThan(0);
    for (const line of shown) expect(Array.from(line).length).toBeLessThanOrEqual(ERROR_TEXT_MAX);
  });

  it('a job that failed entirely names the error in its title on one line of at most 200 characters', async () => {
    const h = await slackHarness({ providers: { local: new FailingProvider({ latencyMs: 20 }) } });
    await h.imagine('doomed fox --count 2');
    const { ts, jobId } = await h.progressPost();
    expect((await h.app.engine.waitFor(jobId)).state).toBe('failed');
    const { value: final } = await pollUntil(
      async () => h.fake.message('C1', ts),
      (m) => (m?.text ?? '').startsWith('Failed'),
      { timeoutMs: 10_000, intervalMs: 20 },
    );
    const titles = shownErrors({ args: { text: final!.text, blocks: final!.blocks } });
    // The notification text and the title block.
    expect(titles.length).toBeGreaterThanOrEqual(2);
    for (const line of titles) expect(Array.from(line).length).toBeLessThanOrEqual(ERROR_TEXT_MAX);
    expect(unescape(final!.text).split('\n')).toHaveLength(1);
  });

  it('uploads a gallery one page (at most 10 files) at a time: no page is read before the previous one is done', async () => {
    // Per-image pages (23 images would be contact sheets at the default GALLERY_INLINE_MAX of 20).
    const h = await slackHarness({ env: { LOCAL_LATENCY_MS: '0', LOCAL_CONCURRENCY: '4', GALLERY_INLINE_MAX: '30' } });
    await h.imagine('a crowd of foxes --count 23');
    const { jobId } = await h.progressPost();
    await h.delivered(jobId);
    const calls = h.fake.calls().filter((c) => ['files.getUploadURLExternal', 'upload', 'files.completeUploadExternal'].includes(c.method));
    // Group by completion: every file of a page is asked for, sent and completed before the next page starts.
    const pages: string[][] = [[]];
    for (const call of calls) {
      pages.at(-1)!.push(call.method);
      if (call.method === 'files.completeUploadExternal') pages.push([]);
    }
    pages.pop();
    expect(pages.map((p) => p.filter((m) => m === 'upload').length)).toEqual([10, 10, 3]);
    for (const page of pages) {
      const n = page.filter((m) => m === 'upload').length;
      expect(page.filter((m) => m === 'files.getUploadURLExternal')).toHaveLength(n);
      expect(page.at(-1)).toBe('files.completeUploadExternal');
    }
  });
});
