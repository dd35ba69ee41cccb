/** What the composition root needs from a chat adapter. */
import type { App } from '../app.js';

export interface ChatAdapter {
  readonly name: string;
  /** connected and able to answer, for /healthz */
  healthy(): boolean;
  /** stop taking commands; progress messages already sent stay as they are */
  stop(): Promise<void>;
}

/**
 * Adapters start before the engine resumes jobs, so they see the progress of resumed jobs. Each takes
 * the process's Delivery in its options (or makes its own).
 */
export type StartAdapter = (app: App) => Promise<ChatAdapter>;
