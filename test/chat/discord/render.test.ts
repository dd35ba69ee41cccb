import { describe, expect, it } from 'vitest';
import { planPages, layoutFor } from '../../../src/chat/discord/gallery.js';
import { CONTENT_MAX, galleryBody, progressBody, safe, uploadName } from '../../../src/chat/discord/render.js';
import { describeError, scrubTokens } from '../../../src/chat/discord/transport.js';
import { decodeAction } from '../../../src/core/actions.js';
import type { ImageRecord, Job } from '../../../src/core/types.js';
import { gallerySummary, progressView } from '../../../src/core/views.js';
import { DiscordAPIError, MessageFlags } from 'discord.js';

function image(index: number, status: ImageRecord['review']['status'] = 'pending', nsfw = false): ImageRecord {
  return {
    index,
    batchIndex: Math.floor((index - 1) / 4),
    file: `pending-review/${String(index).padStart(3, '0')}.png`,
    width: 768,
    height: 768,
    nsfw,
    contentType: 'image/png',
    review: { status },
  };
}

function job(images: ImageRecord[], prompt = 'a fox'): Job {
  return {
    id: '20250101-abcdef12',
    createdAt: '',
    updatedAt: '',
    requester: { tenant: 'g', userId: 'u', platform: 'discord' },
    request: { prompt, count: images.length, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state: 'completed',
    batches: [],
    images,
    estimatedCostUsd: 0,
  };
}

describe('Discord rendering', () => {
  it('escapes markdown and breaks every kind of mention', () => {
    expect(safe('@everyone @here <@1> <@!2> <@&3> <#4> **bold** _it_')).toBe(
      '@\u200beveryone @\u200bhere <\u200b@1> <\u200b@!2> <\u200b@&3> <\u200b#4> \\*\\*bold\\*\\* \\_it\\_',
    );
  });

  it('turns a masked link into plain brackets and a URL into text that is not autolinked', () => {
    expect(safe('[Claim Nitro](https://evil.example)')).toBe('\\[Claim Nitro\\](https:\u200b//evil.example)');
    expect(safe('[x](<http://evil.example>)')).toBe('\\[x\\](<\u200bhttp:\u200b//evil.example>)');
    // escapeMarkdown spares `_` inside a URL; once the URL is broken they must be escaped like any other.
    expect(safe('see https://evil.example/a_b_c')).toBe('see https:\u200b//evil.example/a\\_b\\_c');
    expect(safe('steam://run/1')).toBe('steam:\u200b//run/1');
  });

  it('breaks emoji, timestamps and command links, and escapes line-start headings, subtext and lists', () => {
    expect(safe('<:nitro:1> <a:spin:2> <t:1700000000:R> </imagine:3>')).toBe(
      '<\u200b:nitro:1> <\u200ba:spin:2> <\u200bt:1700000000:R> <\u200b/imagine:3>',
    );
    expect(safe('# Big\n-# small\n- item\n1. one')).toBe('\\# Big\n\\-# small\n\\- item\n1\\. one');
    // Ordinary text is left alone.
    expect(safe('a red fox, 16:9 <3 & a > b')).toBe('a red fox, 16:9 <3 & a > b');
  });

  it('shows a failed job’s provider error as one line of at most 200 characters, and suppresses embeds', () => {
    const failed = { ...job([]), state: 'failed' as const, error: `all 4 images failed: line one\nline two ${'y'.repeat(500)}` };
    const view = progressView(failed, {
      jobId: failed.id,
      state: 'failed',
      batchesTotal: 1,
      batchesDone: 0,
      batchesFailed: 1,
      imagesDone: 0,
      imagesTotal: 4,
      imagesFailed: 4,
      failures: [],
    });
    const body = progressBody(view, gallerySummary(failed));
    const [title] = body.content.split('\n');
    expect(title).toMatch(/^\*\*Failed: all 4 images failed: line one line two y+…\*\*$/);
    expect(Array.from(title!.slice(2, -2)).length).toBeLessThanOrEqual(200);
    expect(body.flags & MessageFlags.SuppressEmbeds).toBe(MessageFlags.SuppressEmbeds);
  });

  it('cuts an overlong progress message in its body and keeps the job footer', () => {
    // Running: failure lines are listed while a job runs (once finished, its summary names them).
    const j = { ...job([], '*'.repeat(1500)), state: 'running' as const };
    const view = progressView(j, {
      jobId: j.id,
      state: 'running',
      batchesTotal: 10,
      batchesDone: 0,
      batchesFailed: 0,
      imagesDone: 0,
      imagesTotal: 40,
      imagesFailed: 0,
      // Escaping doubles these: five of them alone pass the limit.
      failures: Array.from({ length: 5 }, () => '_'.repeat(400)),
    });
    const body = progressBody(view);
    expect(body.content.length).toBeLessThanOrEqual(CONTENT_MAX);
    expect(body.content).toContain('…\n-# job 20250101-abcdef12');
    expect(body.content.endsWith('\n-# job 20250101-abcdef12')).toBe(true);
  });

  it('lays out 10 images as 5 rows of Approve / Reject (a rejected one: Approve / Reroll), every custom id unique and decodable', () => {
    const images = Array.from({ length: 10 }, (_, i) => image(i + 1, i === 0 ? 'approved' : i === 1 ? 'rejected' : 'pending'));
    const body = galleryBody(job(images), { page: 1, pages: 2, images: images.map((i) => i.index) }, gallerySummary(job(images)));
    expect(body.components).toHaveLength(5);
    const buttons = body.components.flatMap((row) => row.components) as { custom_id: string; label: string; style: number }[];
    expect(buttons).toHaveLength(20);
    expect(new Set(buttons.map((b) => b.custom_id)).size).toBe(20);
    expect(buttons.map((b) => decodeAction(b.custom_id)?.kind)).toEqual(buttons.map((_, i) => (i === 3 ? 'reroll' : 'review')));
    expect(buttons.slice(0, 4).map((b) => [b.label, b.style])).toEqual([
      ['✅ 1', 3],
      ['❌ 1', 2],
      ['✅ 2', 2],
      ['🎲 Reroll 2', 1],
    ]);
    expect(body.content).toContain('**Gallery 1/2**');
    expect(body.content).toContain('`#1` ✅  `#2` ❌  `#3` ⏳');
    expect(body.allowed_mentions).toEqual({ parse: [] });
  });

  it('names flagged images SPOILER_ and keeps the file name otherwise', () => {
    expect(uploadName(image(3, 'pending', true))).toBe('SPOILER_003.png');
    expect(uploadName(image(4))).toBe('004.png');
  });

  it('keeps a progress message under 2000 characters whatever the failures say', () => {
    const j = job([], 'p'.repeat(1500));
    const view = progressView(j, {
      jobId: j.id,
      state: 'running',
      batchesTotal: 3,
      batchesDone: 0,
      batchesFailed: 0,
      imagesDone: 0,
      imagesTotal: 12,
      imagesFailed: 0,
      failures: Array.from({ length: 40 }, (_, i) => `batch ${i} failed: ${'x'.repeat(400)}`),
    });
    const body = progressBody({ ...view, title: 'Generating 12 images', finished: false, cancellable: true });
    expect(body.content.length).toBeLessThanOrEqual(CONTENT_MAX);
    expect(body.content).toContain('… and 35 earlier');
    expect(body.components).toHaveLength(1);
  });

  it('pages by 10 images and by the 25 MiB request limit; too-large files do not count', () => {
    const small = Array.from({ length: 12 }, (_, i) => ({ index: i + 1, bytes: 1000 }));
    expect(planPages(small).map((p) => p.images.length)).toEqual([10, 2]);
    const big = Array.from({ length: 4 }, (_, i) => ({ index: i + 1, bytes: 9 * 1024 * 1024 }));
    expect(planPages(big).map((p) => p.images)).toEqual([[1, 2], [3, 4]]);
    const huge = [{ index: 1, bytes: 50 * 1024 * 1024 }, ...big.slice(0, 2).map((b) => ({ ...b, index: b.index + 1 }))];
    expect(planPages(huge).map((p) => p.images)).toEqual([[1, 2, 3]]);
  });

  it('finds a button’s page from the saved layout, else by pages of 10', () => {
    const j = job(Array.from({ length: 12 }, (_, i) => image(i + 1)));
    const saved = [{ messageId: 'm1', images: [1, 2, 3] }, { messageId: 'm2', images: [4, 5], skipped: [5] }];
    expect(layoutFor(j, saved, 'm2', 4)).toEqual({ page: 2, pages: 2, images: [4, 5], skipped: new Set([5]) });
    expect(layoutFor(j, undefined, 'x', 11)).toMatchObject({ page: 2, pages: 2, images: [11, 12] });
  });

  it('never lets an interaction token reach a log line', () => {
    const url = 'http://127.0.0.1:1/api/v10/webhooks/123/aW50ZXJhY3Rpb24secret/messages/%40original';
    expect(scrubTokens(url)).toBe('http://127.0.0.1:1/api/v10/webhooks/123/[token]/messages/%40original');
    const error = new DiscordAPIError({ message: 'Invalid Webhook Token', code: 50027 }, 50027, 401, 'PATCH', url, { body: { content: 'x' } });
    const logged = JSON.stringify(describeError(error));
    expect(logged).not.toContain('secret');
    expect(logged).toContain('50027');
  });
});
