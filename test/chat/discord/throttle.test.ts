import { afterEach, describe, expect, it, vi } from 'vitest';
import { Delivery } from '../../../src/chat/delivery/index.js';
import { discordPlatform } from '../../../src/chat/discord/platform.js';
import type { MessageBody } from '../../../src/chat/discord/render.js';
import type { MessageTarget, Transport } from '../../../src/chat/discord/transport.js';
import type { Job, ProgressEvent } from '../../../src/core/types.js';
import { buildApp } from '../../helpers.js';

function discordJob(id: string, messageId: string): Job {
  return {
    id,
    createdAt: new Date(0).toISOString(),
    updatedAt: new Date(0).toISOString(),
    requester: { tenant: 'guild', userId: 'u1', platform: 'discord', channelId: '10' },
    request: { prompt: 'a fox', count: 100, provider: 'local', model: 'local', aspectRatio: '1:1', seed: 1 },
    state: 'running',
    batches: [],
    images: [],
    estimatedCostUsd: 0,
    chat: { discord: { channelId: '10', messageId } },
  };
}

function event(jobId: string, imagesDone: number): ProgressEvent {
  return {
    jobId,
    state: 'running',
    batchesTotal: 25,
    batchesDone: Math.floor(imagesDone / 4),
    batchesFailed: 0,
    currentBatch: { index: Math.floor(imagesDone / 4) + 1, state: 'submitted', attempt: 1 },
    imagesDone,
    imagesTotal: 100,
    imagesFailed: 0,
    failures: [],
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Discord progress edits', () => {
  it('turn a burst of 50 progress events into two edits per message, 1.5 s apart, the second with the latest state', async () => {
    const app = await buildApp();
    const edits: { messageId: string; content: string }[] = [];
    const transport: Transport = {
      edit: async (target: MessageTarget, body: MessageBody) => void edits.push({ messageId: target.messageId, content: body.content }),
      post: async () => 'unused',
      useToken: () => undefined,
    };
    vi.useFakeTimers();
    // Discord's platform with its default interval, over a transport that records.
    const courier = new Delivery(app).register(discordPlatform({ transport, images: app.files }));
    try {
      const a = discordJob('20250101-aaaaaaaa', '1001');
      const b = discordJob('20250101-bbbbbbbb', '1002');
      for (let i = 1; i <= 50; i++) {
        app.engine.emit('progress', event(a.id, i), a);
        if (i % 10 === 0) app.engine.emit('progress', event(b.id, i), b);
      }
      await vi.advanceTimersByTimeAsync(0);
      // The first state of each message goes out at once.
      expect(edits.map((e) => [e.messageId, /(\d+)\/100 images/.exec(e.content)?.[1]])).toEqual([
        ['1001', '1'],
        ['1002', '10'],
      ]);
      await vi.advanceTimersByTimeAsync(1499);
      expect(edits).toHaveLength(2);
      await vi.advanceTimersByTimeAsync(1);
      expect(edits.slice(2).map((e) => [e.messageId, /(\d+)\/100 images/.exec(e.content)?.[1]])).toEqual([
        ['1001', '50'],
        ['1002', '50'],
      ]);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(edits).toHaveLength(4);
      expect(edits[2]?.content).toContain('Batch 13/25 · generating');
    } finally {
      vi.useRealTimers();
      await courier.stop();
    }
  });

  it('edit only messages of Discord jobs', async () => {
    const app = await buildApp();
    const edits: string[] = [];
    const transport: Transport = { edit: async (_t, body) => void edits.push(body.content), post: async () => 'unused', useToken: () => undefined };
    const courier = new Delivery(app).register(discordPlatform({ transport, images: app.files }));
    const job = { ...discordJob('20250101-cccccccc', '1003'), requester: { tenant: 'playground', userId: 'u', platform: 'playground' as const } };
    app.engine.emit('progress', event(job.id, 1), job);
    app.engine.emit('progress', event('20250101-dddddddd', 7), discordJob('20250101-dddddddd', '1004'));
    await new Promise((resolve) => setImmediate(resolve));
    await courier.stop();
    expect(edits).toHaveLength(1);
    expect(edits[0]).toContain('7/100 images');
  });
});
