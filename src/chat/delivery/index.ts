/**
 * Delivery: everything between the engine's events and a chat platform's messages, written once. One
 * Delivery listens to the engine (once, however many platforms) and routes each event by
 * `job.requester.platform` to that platform's courier (courier.ts), which runs the lifecycle over the
 * small interface the platform implements (platform.ts). The composition root makes one and hands it
 * to every adapter; an adapter started on its own (tests, tools) makes its own.
 *
 * In distributed mode (`app.shared`) the engine tells only the process that made a change, so every
 * process delivers: its couriers take locks and gates in Redis (shared.ts) to keep it to one message,
 * one gallery and one edit per interval.
 */
import type { Keyv } from 'keyv';
import type { Engine } from '../../core/engine.js';
import type { Job, ProgressEvent } from '../../core/types.js';
import { Courier, type CourierOptions, type DeliveryLog } from './courier.js';
import type { DeliveryPlatform } from './platform.js';
import type { SharedDelivery } from './shared.js';

export { deliveryLines, failedBatchLines, failureLines, GALLERY_FAILED, progressCard } from './card.js';
export { Courier, type CourierOptions, type DeliveryLog } from './courier.js';
export type { Facts } from './facts.js';
export * from './platform.js';
export { EditGate, type SharedDelivery } from './shared.js';

type Route = Pick<Courier<never, never>, 'progress' | 'finished' | 'reviewed'>;

export class Delivery {
  private readonly routes = new Map<string, Route>();
  private readonly onProgress = (event: ProgressEvent, job: Readonly<Job>) => this.routes.get(job.requester.platform)?.progress(event, job);
  private readonly onFinished = (job: Job) => this.routes.get(job.requester.platform)?.finished(job);
  // Wherever a review was made (a button, the review page, the CLI in this process), the job's messages follow.
  private readonly onReviewed = (job: Job, images: number[]) => this.routes.get(job.requester.platform)?.reviewed(job, images);

  /** `shared`: distributed mode's Redis, locks and prefix (the App's `shared`); undefined in one process */
  constructor(private readonly deps: { engine: Engine; keyv: Keyv; logger: DeliveryLog; shared?: SharedDelivery | undefined }) {}

  /** Starts delivering one platform's jobs, and what a restart cut off: call it once the platform can send. */
  register<T extends Record<string, unknown>, P = never>(platform: DeliveryPlatform<T, P>, options: CourierOptions = {}): Courier<T, P> {
    if (this.routes.has(platform.name)) throw new Error(`delivery: ${platform.name} is registered already`);
    const { engine, keyv, logger, shared } = this.deps;
    const courier: Courier<T, P> = new Courier(platform, { engine, keyv, log: logger, shared }, options, () => {
      // Its stop(): the last platform to go takes the engine listeners with it.
      if (this.routes.get(platform.name) === courier) this.routes.delete(platform.name);
      if (this.routes.size > 0) return;
      engine.off('progress', this.onProgress);
      engine.off('finished', this.onFinished);
      engine.off('reviewed', this.onReviewed);
    });
    if (this.routes.size === 0) {
      engine.on('progress', this.onProgress);
      engine.on('finished', this.onFinished);
      engine.on('reviewed', this.onReviewed);
    }
    this.routes.set(platform.name, courier);
    courier.open();
    return courier;
  }
}
