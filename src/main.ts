/**
 * The bot's composition root: config → store → providers → engine → chat adapters. Unfinished jobs
 * are resumed first; SIGINT/SIGTERM stop taking work, persist, and exit.
 */
import { createApp } from './app.js';
import { configuredProviders, loadConfig } from './config.js';

export async function startBot(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const app = await createApp(config);
  const resumed = await app.engine.resume();
  app.logger.info(
    { providers: configuredProviders(config), defaultProvider: app.limits.defaultProvider, resumed, outputDir: config.outputDir },
    'Art Factory engine started',
  );

  const shutdown = async (signal: string) => {
    app.logger.info({ signal }, 'shutting down: no new commands, running calls persisted');
    await app.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
}
