/**
 * The bot's composition root: config → store → providers → engine → chat adapters. Adapters start
 * before unfinished jobs resume, so a resumed job's progress reaches the message it was in before the
 * restart. SIGINT/SIGTERM stop taking commands, persist what is running, and exit.
 *
 * ROLE (distributed mode): `all` takes commands and runs batches; `edge` takes commands and renders
 * (its dispatcher runs no batches); `worker` runs batches and takes no commands — no gateway, no Slack
 * receiver, no playground — but still delivers what it changes (progress edits, galleries of the jobs
 * it finishes) over the platforms' APIs, since the engine tells only the process that made a change.
 *
 * With PUBLIC_URL, the public HTTP server (HTTP_HOST:HTTP_PORT) receives the providers' webhooks; it
 * starts before unfinished jobs resume, so the deliveries of resumed calls are received.
 */
import { createApp } from './app.js';
import { Delivery } from './chat/delivery/index.js';
import { startDiscord } from './chat/discord/index.js';
import { startPlayground } from './chat/playground/index.js';
import { startSlack } from './chat/slack/index.js';
import type { ChatAdapter } from './chat/types.js';
import { configuredProviders, loadConfig } from './config.js';
import { startHealthServer, type HealthServer } from './health.js';
import { createWebhookReceiver } from './providers/webhooks.js';
import { startWebServer, type WebServer } from './web/server.js';
import { webhookRoutes } from './web/webhooks.js';
import { reviewRoutes } from './web/review-page.js';
import { Thumbnails } from './store/thumbnails.js';

export async function startBot(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const config = loadConfig(env);
  const app = await createApp(config, { servesWebhooks: config.webhooks !== undefined });
  const adapters: ChatAdapter[] = [];
  // One delivery for every adapter: it listens to the engine once and routes each job to its platform.
  const delivery = new Delivery(app);
  const receive = config.role !== 'worker';

  if (config.playground.enabled && !receive) {
    app.logger.info({ role: config.role }, 'the playground is not started: this process takes no commands (ROLE=worker)');
  } else if (config.playground.enabled) {
    const playground = await startPlayground(app, { delivery }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') {
        throw new Error(`PLAYGROUND_PORT: port ${config.playground.port} is in use; set PLAYGROUND_PORT to a free port`);
      }
      throw error;
    });
    adapters.push(playground);
    process.stdout.write(`\n  Art Factory playground: ${playground.url}\n  Open it and type: /imagine a red fox --count 8\n\n`);
  }
  if (config.discord) adapters.push(await startDiscord(app, { delivery, receive }));
  if (config.slack) adapters.push(await startSlack(app, { delivery, receive }));
  if (adapters.length === 0 && receive) {
    throw new Error('nothing to run: no chat platform is configured and PLAYGROUND=off');
  }
  if (adapters.length === 0) {
    app.logger.warn(
      { role: config.role },
      'ROLE=worker with no chat platform configured: batches run here, but the galleries of jobs finished here wait for a process that delivers to start',
    );
  }

  let health: HealthServer | undefined;
  if (config.healthPort !== undefined) {
    health = await startHealthServer(app, () => adapters, config.healthPort).catch((error: NodeJS.ErrnoException) => {
      // Health is an extra: a busy port is reported, not fatal.
      app.logger.warn({ port: config.healthPort, code: error.code }, 'health server not started: set HEALTH_PORT to a free port, or off');
      return undefined;
    });
  }

  let web: WebServer | undefined;
  if (config.webhooks) {
    const receiver = createWebhookReceiver(config, app.notices, app.logger);
    web = await startWebServer({ host: config.http.host, port: config.http.port, log: app.logger, routes: webhookRoutes(receiver) }).catch(
      (error: NodeJS.ErrnoException) => {
        if (error.code === 'EADDRINUSE') throw new Error(`HTTP_PORT: port ${config.http.port} is in use; set HTTP_PORT to a free port (webhooks are delivered there)`);
        throw error;
      },
    );
    void receiver.warmUp();
    // The review page (PUBLIC_URL/review/<job>), reached by the signed links chat offers to reviewers.
    if (config.review) {
      web.add(
        ...reviewRoutes({
          engine: app.engine,
          files: app.files,
          thumbnails: new Thumbnails(),
      feed: app.reviewFeed,
          access: { kind: 'token', secret: config.review.secret, publicUrl: config.review.baseUrl },
          now: Date.now,
          log: app.logger,
        }),
      );
    } else {
      app.logger.info('review page off: set REVIEW_SECRET (at least 32 random characters) to offer "Review in browser"');
    }
  }

  const resumed = await app.engine.resume();
  app.logger.info(
    {
      role: config.role,
      adapters: adapters.map((a) => a.name),
      providers: configuredProviders(config),
      defaultProvider: app.limits.defaultProvider,
      resumed,
      outputDir: config.outputDir,
      health: health?.url,
      webhooks: config.webhooks ? { fal: config.fal ? config.webhooks.falUrl : undefined, replicate: config.replicate ? config.webhooks.replicateUrl : undefined, listening: web?.url } : undefined,
    },
    'Art Factory started',
  );

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    app.logger.info({ signal }, 'shutting down: no new commands; running calls are persisted and resume on the next start');
    const timer = setTimeout(() => process.exit(1), 10_000);
    await Promise.allSettled(adapters.map((adapter) => adapter.stop()));
    await health?.stop();
    await web?.stop();
    await app.close();
    clearTimeout(timer);
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
}
