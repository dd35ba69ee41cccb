import { describe, expect, it } from 'vitest';
import { progressCard } from '../../../src/chat/delivery/index.js';
import { escapeMrkdwn, progressMessage } from '../../../src/chat/slack/render.js';
import { ERROR_LINE_MAX as ERROR_TEXT_MAX, oneLine as errorText } from '../../../src/core/text.js';
import type { Batch, Job, ProgressEvent } from '../../../src/core/types.js';
import { textsOf, unescapeMrkdwn } from './harness.js';

const unescape = unescapeMrkdwn;

/** An error as an older version stored it, before errors were capped: long, several lines, markup. */
const STORED_ERROR = `UPSTREAM <b>gateway</b>\n\nTraceback:\n${'  at frame\n'.repeat(60)}TAIL`;

function batch(index: number, change: Partial<Batch> = {}): Batch {
  return { index, start: index * 4, size: 4, seed: 1, state: 'done', requestIds: [], attempts: 1, failures: 0, delivered: 4, ...change };
}

function jobOf(change: Partial<Job>): Job {
  return {
    id: '20250101-0123abcd',
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    requester: { tenant: 'T1', userId: 'U1', platform: 'slack', channelId: 'C1' },
    request: { prompt: 'a fox', count: 8, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state: 'running',
    batches: [batch(0), batch(1)],
    images: [],
    ...change,
  };
}

function eventOf(job: Job, change: Partial<ProgressEvent> = {}): ProgressEvent {
  return {
    jobId: job.id,
    state: job.state,
    batchesTotal: job.batches.length,
    batchesDone: 0,
    batchesFailed: 0,
    imagesDone: 0,
    imagesTotal: 8,
    imagesFailed: 0,
    failures: [],
    ...change,
  };
}

/** Each line of the message (text and every block text) that shows the stored error, unescaped. */
function errorLines(rendered: { text: string; blocks: unknown[] }): string[] {
  const texts = textsOf(rendered);
  return texts.flatMap((t) => unescape(t).split('\n')).filter((line) => line.includes('UPSTREAM') || line.includes('at frame'));
}

/** The error's part of a line: from the marker to the "…" that ends it. */
function shown(line: string): string {
  const from = line.indexOf('UPSTREAM');
  const to = line.indexOf('…', from);
  expect(from).toBeGreaterThanOrEqual(0);
  expect(to).toBeGreaterThan(from);
  return line.slice(from, to + 1);
}

describe('progressMessage with error texts nobody capped', () => {
  it('a running job’s failure lines are one line each, the error at most 200 characters', () => {
    const job = jobOf({ batches: [batch(0, { state: 'failed', delivered: 0, error: STORED_ERROR }), batch(1, { state: 'submitted', delivered: 0 })] });
    const rendered = progressMessage(job, progressCard(job, eventOf(job, { failures: [`Batch 1: ${STORED_ERROR}`], imagesFailed: 4 }), 'none'));
    const lines = errorLines(rendered);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^:warning: • Batch 1: UPSTREAM <b>gateway<\/b> Traceback: at frame at frame .*…$/);
    expect(lines[0]).not.toContain('TAIL');
    // The whole failure line as the core built it ("Batch 1: …") fits in 200 characters.
    expect(Array.from(lines[0]!.slice(':warning: • '.length)).length).toBeLessThanOrEqual(ERROR_TEXT_MAX);
  });

  it('a finished job’s summary names each failed batch on one line, the error at most 200 characters', () => {
    const job = jobOf({
      state: 'completed',
      error: `completed with 4 images failed: ${STORED_ERROR}`,
      batches: [batch(0), batch(1, { state: 'failed', delivered: 0, error: STORED_ERROR })],
    });
    const rendered = progressMessage(job, progressCard(job, eventOf(job, { state: 'completed', imagesDone: 4, imagesFailed: 4 }), 'posted'));
    const lines = errorLines(rendered);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^:warning: Batch 2: 4 images not made \(UPSTREAM .*…\)$/);
    expect(Array.from(shown(lines[0]!)).length).toBeLessThanOrEqual(ERROR_TEXT_MAX);
  });

  it('a failed job’s title (and notification text) carries the error on one line of at most 200 characters', () => {
    const job = jobOf({ state: 'failed', error: `all 8 images failed: ${STORED_ERROR}`, batches: [batch(0, { state: 'failed', delivered: 0 }), batch(1, { state: 'failed', delivered: 0 })] });
    const rendered = progressMessage(job, progressCard(job, eventOf(job, { state: 'failed' }), 'none'));
    const lines = errorLines(rendered);
    expect(lines.length).toBeGreaterThanOrEqual(2); // the title block and the notification text
    for (const line of lines) {
      expect(line).not.toContain('TAIL');
      expect(line.startsWith('*Failed: all 8 images failed: UPSTREAM') || line.startsWith('Failed: all 8 images failed: UPSTREAM')).toBe(true);
      // The whole title, not only the error, fits in 200 characters.
      expect(Array.from(line.replace(/^\*|\*$/g, '').split('…')[0]!).length + 1).toBeLessThanOrEqual(ERROR_TEXT_MAX);
    }
    expect(unescape(rendered.text)).not.toContain('\n');
  });

  it('markup in an error stays literal after the cut: no half entity, no live link', () => {
    const error = `${'y'.repeat(190)} <https://evil.example|click> & more`;
    const job = jobOf({ state: 'completed', error: 'x', batches: [batch(0), batch(1, { state: 'failed', delivered: 0, error })] });
    const rendered = progressMessage(job, progressCard(job, eventOf(job, { state: 'completed', imagesDone: 4, imagesFailed: 4 }), 'posted'));
    const json = JSON.stringify(rendered.blocks);
    // Cut at 200 characters of the text as typed, then escaped.
    expect(json).toContain(`(${'y'.repeat(190)} &lt;https:/…)`);
    expect(json).not.toContain('<https://evil');
    expect(json).not.toMatch(/&[a-z]*…/);
  });
});

describe('escapeMrkdwn and errorText', () => {
  it('escapeMrkdwn leaves no <, > or bare & behind, so no mention or link can form', () => {
    const raw = '<!channel> <https://evil.example|Claim Nitro> <@U123> <#C1> &lt; AT&T';
    const escaped = escapeMrkdwn(raw);
    expect(escaped).toBe('&lt;!channel&gt; &lt;https://evil.example|Claim Nitro&gt; &lt;@U123&gt; &lt;#C1&gt; &amp;lt; AT&amp;T');
    expect(escaped).not.toMatch(/[<>]/);
    expect(unescape(escaped)).toBe(raw);
  });

  it('errorText flattens line breaks, control characters and bidi overrides, and cuts at 200 with "…"', () => {
    expect(errorText('a\nb\r\n\tc\u0000d\u202eevil\u2028e')).toBe('a b c d evil e');
    expect(errorText('short')).toBe('short');
    const long = errorText(`start ${'é'.repeat(400)}`);
    expect(Array.from(long)).toHaveLength(200);
    expect(long.endsWith('…')).toBe(true);
    expect(errorText('x'.repeat(200))).toBe('x'.repeat(200));
    // Emoji count as one character each, and are never split in half.
    const emoji = errorText('🦊'.repeat(250));
    expect(Array.from(emoji)).toHaveLength(200);
    expect(emoji.slice(0, -1)).toBe('🦊'.repeat(199));
  });
});
