/** BENCHMARKS.md: the machine, the table, how each figure was taken, and why a target was missed. */
import type { ClusterFigures } from './cluster.js';
import { idealMakespan } from './ideal.js';
import { figures, isFailed, markdownTable, type Machine, type Results, type Row } from './report.js';
import { EDIT_INTERVAL_MS, EDIT_ROUND_TRIP_MS, PROVIDER } from './scenarios.js';

const pct = (share: number) => `${Math.round(share * 100)} %`;
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The catalog's minimum (1000 images), known whether or not its run gave figures. */
const CATALOG_IDEAL_MS = idealMakespan({
  calls: Math.ceil(1000 / PROVIDER.imagesPerCall),
  concurrency: PROVIDER.concurrency,
  callMs: PROVIDER.callMs,
  limit: PROVIDER.limit,
  windowMs: PROVIDER.windowMs,
});

function method(r: Results): string {
  const { callMs, limit, windowMs, concurrency } = PROVIDER;
  const ideal = CATALOG_IDEAL_MS;
  const cpuMsPerImage = figures(r.catalog)?.cpuMsPerImage;
  const cpu =
    cpuMsPerImage === undefined
      ? 'spends tens of ms of CPU per image (not measured in this run: the catalog run failed)'
      : `spends ~${cpuMsPerImage.toFixed(0)} ms of CPU per image`;
  const jobCpu = cpuMsPerImage === undefined ? 'tens of seconds' : `~${sec(cpuMsPerImage * 1000)}`;
  return `## How the figures are taken

- **The provider** is the fake fal queue API (\`test/fakes/fal.ts\`) in the parent process, on 127.0.0.1. A call
  completes ${callMs / 1000} s (scaled) after its submit. It enforces fal's limit itself in every scenario —
  at most ${limit} accepted submits in any rolling ${windowMs / 1000} s, else 429 with Retry-After (header and body;
  fractional seconds, because time is scaled) — so a 429 counted is one the bot earned. Scenarios 1–3 and
  5–7 serve a ~1.08 MB PNG of random noise (600×600, made once and cached: incompressible, like a real flux
  PNG); the burst serves the fake's small default PNG.
- **The core** runs in a child process (\`bench/child.ts\`, \`node --import tsx\`): \`createApp\` with the real
  SQLite store in a temp folder, real image files on disk, the real \`FalProvider\` and \`@fal-ai/client\`, the
  real engine and scheduler. Requests go through \`parseImagineText\` (commands/imagine.ts) and
  \`engine.submit\`, as the adapters do. The child reports its own CPU time (\`process.cpuUsage\`, from the first
  request to the last job finished) and peak RSS (\`process.resourceUsage().maxRSS\`), so the fake's work and
  memory are not counted. The lane is ${concurrency} concurrent calls; in scenarios 1, 3, 5–7 the bot is told the
  limit (${limit} per ${windowMs / 1000} s, as FAL_RATE_LIMIT would), in scenario 2 it is not. Tenant rate limits are
  off, so the provider's limit is the one that binds.
- **Scaled time**: engine polls every tenth of a call and retries from 1 s, both scaled; the edit throttle is
  ${EDIT_INTERVAL_MS / 1000} s scaled and one edit's round trip ${EDIT_ROUND_TRIP_MS} ms scaled.
- **Theoretical minimum** of N equal calls of length T, at most C in flight and at most L starts in any
  window W (\`bench/ideal.ts\`), by simulating the ideal schedule, every call starting as early as both
  limits allow:

      start_k = max(0, start_{k-C} + T, start_{k-L} + W)      makespan = start_{N-1} + T

  With equal T the greedy schedule is optimal. For 250 calls, C = ${concurrency}, T = ${callMs / 1000} s, L = ${limit},
  W = ${windowMs / 1000} s: starts at 0, 5 … 45 s, then 60 … 105 s, then 120 … 140 s; makespan ${sec(ideal)}.
- **Ratios are taken inside one run** (makespan ÷ the minimum at the same scale; B's wait in units of one
  call), so they hold on a noisy machine better than absolute times — but not against other work taking
  the CPU: our per-call cost matters at these scales, so load shows up in the ratios. Compare runs at
  similar load (above).

### Scales, and why

- **1:${r.catalogScale}** for scenarios 1, 2, 3, 5, 6 and 7: a ${callMs / 1000} s call lasts ${callMs / r.catalogScale} ms, the ${windowMs / 1000} s window
  ${windowMs / r.catalogScale} ms. The issue suggests 1:100, and 1:20 if our overhead shows. It does, at both: the core
  ${cpu} (download, write, read back dimensions, save), so a
  1000-image job needs ${jobCpu} of the child's time whatever the scale. At 1:100 the
  minimum is ${sec(ideal / 100)} of real time and at 1:20 ${sec(ideal / 20)}: the makespan would measure the
  core's throughput (ratios of 3–4× at 1:20 in trial runs), not the queue. At 1:${r.catalogScale} the minimum is
  ${sec(ideal / r.catalogScale)}, close to what the core needs, so the excess left is the core's own overhead, and
  is reported as such. A gentler scale (1:2, 1:1) would take 1–2.5 minutes per scenario and break the
  5-minute budget of \`npm run bench\`.
- **1:${r.burstScale}** for the burst (scenario 4): its figure is acceptance latency in real milliseconds, which scale
  does not touch; the scale only shortens running the 500 calls afterwards. Each request asks for
  \`--count 1\` (500 calls, one per request) so that part stays within the budget.

### Per scenario

1. One tenant, one job of 1000 images; calls = accepted submits at the fake; makespan = first request to
   the job's \`finishedAt\`. This run also carries scenario 3's FIFO guest (below): its 4 images queue behind
   all 250 of the job's calls, so the job runs as it would alone, and one run serves both (the budget).
2. The same with no \`rateLimit\` in the lane: the bot learns the limit from the fake's 429s (each pauses the
   lane for its Retry-After, and the batch is tried again).
3. Tenant A asks for 1000 images; ${10} s (scaled) later tenant B asks for 4. B's time from its request to its
   job finished, divided by one call (${callMs / 1000} s); that run stops once B is done (A is cancelled). FIFO:
   B given A's tenant id, so both share one queue — the same code, no round-robin between them; measured
   in scenario 1's run.
4. 500 requests (10 per tenant, each from its own user) start in the same tick; latency = arrival to
   \`engine.submit\` resolved (job persisted and queued: the moment an adapter can answer). Tenant job limits
   are raised (100 running, 1000 queued, 1000 per user) so nothing is refused; the daily cap stays at its
   default (1000 images), which these requests fit.
5. Peak RSS of the child (\`maxRSS\`) over the catalog run of scenario 1, with ~1 MB images: 1000 images
   ≈ 1.08 GB pass through it. "Idle" is its RSS before the first request.
6. In the catalog run, every progress event of the job is offered to a \`LatestThrottle\` with a
   ${EDIT_INTERVAL_MS / 1000} s (scaled) interval, as the adapters do; sends are counted per rolling ${EDIT_INTERVAL_MS / 1000} s (with 2 %
   slack for timer rounding). The final state, flushed at once when the job finishes (\`LatestThrottle.flush\`,
   by design), is counted apart. Lag = a batch reaching \`done\` → the first send showing that many
   batches done.
7. The child's user + system CPU over the catalog run, divided by the images delivered (download, stream
   to disk, read dimensions, persist, poll, schedule — everything but the fake). The burst's 1-image jobs
   are shown for comparison. The issue sets no target.
8. Distributed mode (\`bench/cluster.ts\`): a redis-server on loopback (skipped, with a line, without one) and
   1, 2, then 4 processes (\`bench/cluster-child.ts\`: the real app with REDIS_URL, one shared OUTPUT_DIR), all
   running batches from one BullMQ queue whose global concurrency and rate are the provider's; the first
   also takes the requests. Four tenants ask for 250 images each at once (the catalog's 250 calls, from four
   tenants); makespan = first request to the last job's \`finishedAt\`, against the same minimum as scenario 1.
   The fake's images are its small default PNGs. 429s as in scenario 1.
`;
}

/** The misses, with the figure and its cause; causes were found by profiling the child (BENCH_CPU_PROF). */
function misses(r: Results, table: Row[]): string {
  const missed = (prefix: string) => table.some((row) => row.scenario.startsWith(prefix) && row.met === false);
  // A run that failed explains itself under "Failed runs"; only runs with figures are explained here.
  const [c, u, f, b] = [figures(r.catalog), figures(r.unknown), figures(r.fairness), figures(r.burst)];
  const callRealMs = PROVIDER.callMs / r.catalogScale;
  const parts: string[] = [];
  const ran = (r.cluster ?? []).filter((k): k is ClusterFigures => !isFailed(k));
  if (ran.some((k) => !(k.ratio <= 1.1 && k.rateLimited === 0 && k.delivered === k.images))) {
    const list = ran.map((k) => `${k.workers}: ${k.ratio.toFixed(2)}× with ${k.rateLimited} 429s`).join('; ');
    parts.push(`### Distributed (scenario 8): ${list}

Each process pays scenario 1's per-call costs (a poll interval, the downloads, the saves), and in distributed
mode every change of a job is also a read and a write of its record in Redis under the job's lock, plus the
queue's own round trips (a ticket's start and end, the send gate). These add a few milliseconds per call and
do not grow with the number of processes; what grows is the CPU the processes share on this machine.`);
  }
  if (c && (missed('1 Catalog — makespan') || missed('2 Unknown limit — makespan'))) {
    parts.push(`### Makespan (scenarios 1 and 2): ${c.ratio.toFixed(2)}× and ${u ? `${u.ratio.toFixed(2)}×` : '(failed)'} the minimum

The limit is used in full (${c.rateLimited} 429s when told; the busiest window saw ${c.maxPerWindow} of the ${PROVIDER.limit} starts allowed),
so the excess is what each call costs on top of the provider's ${PROVIDER.callMs / 1000} s, paid once per round in the last window,
where the 50 remaining calls run as 5 rounds of 10. Per call, in real time: up to one poll interval before
the provider's "done" is seen (polls are a tenth of a call apart, ${callRealMs / 10} ms at 1:${r.catalogScale}: ~${callRealMs / 20} ms on average), then the
result, four ~1 MB downloads streamed to disk, each checked (format from its bytes, dimensions, then decoded to its
last row with sharp, since provider output is untrusted), and the batch's save
(${c.store.saves} job saves in the run, ${c.store.msPerSave.toFixed(1)} ms on average, group-committed). That is ~0.1 s of real time per call:
~10 % of a call at 1:${r.catalogScale}, but ~2 % of a real 5 s call — the scale multiplies our fixed cost by ${r.catalogScale}, not the
provider's. The scheduler itself adds ~1 % (its rate window is 1 % longer than the provider's, to absorb
network jitter). ${
      !u
        ? ''
        : u.rateLimited === 0
        ? 'Scenario 2 received no 429s at this scale, so its ratio measures the same cost as scenario 1.'
        : `Scenario 2 learned the limit from ${u.rateLimited} 429s (each pausing the lane for its Retry-After) and met its target.`
    }`);
  }
  if (f && missed('3 Fairness — B')) {
    parts.push(`### Fairness (scenario 3): B done ${f.fairCalls.toFixed(2)} calls after its request

A newcomer's call is the next to start (round-robin), and FIFO makes B wait ${(c?.guestCalls ?? NaN).toFixed(1)} calls. B still
waits for a slot to free (all ${PROVIDER.concurrency} hold A's calls) and, when A has used its window, for the next start
the rate limit allows; then its own call and the per-call cost above. The figure varies with load
(1.7–2.1 calls in runs on this machine).`);
  }
  if (b && missed('4 Burst — 500')) {
    parts.push(`### Burst (scenario 4): p99 ${b.acceptP99Ms.toFixed(0)} ms to accept

All 500 requests arrive in the same instant, so the p99 is, in effect, the time to accept all 500 (p50
${b.acceptP50Ms.toFixed(0)} ms). Accepting one costs ~0.2–0.3 ms of the process's time: validating, reserving its images
against the daily cap (the first request of each of the 50 tenants reads its tally from the store),
planning, and the job's first save — which is durable before the answer: the job, its tally and the
index of unfinished jobs go out in one group-committed batch, so the 500 share a few statements
instead of 1500. What remains is CPU on one event loop, and going below 50 ms for 500 simultaneous
arrivals would mean answering before the job is on disk, which we do not do: an accepted job must
survive a crash. Against Discord's 3 s deadline the slowest answer still has a ${Math.floor(3000 / Math.max(1, b.acceptP99Ms))}× margin, and real
requests are spread by the network rather than arriving in one tick.`);
  }
  if (c && missed('5 Memory')) {
    parts.push(`### Memory (scenario 5): peak ${c.maxRssMb.toFixed(0)} MB\n\nImages stream to disk; growth comes from the job record (${c.store.jobKb.toFixed(0)} KB at the end) and its serialized copies.`);
  }
  if (missed('6 Edits — progress')) {
    parts.push(`### Edits per interval (scenario 6)\n\nTwo progress edits fell within one ${EDIT_INTERVAL_MS / 1000} s interval: LatestThrottle spaced them by its interval, and the timer fired early against the clock by more than the 2 % slack.`);
  }
  if (c && missed('6 Edits — batch')) {
    const e = c.edits!;
    parts.push(`### Edit lag (scenario 6): max ${sec(e.lagMaxMs)}

The throttle shows a finished batch at most one interval (${EDIT_INTERVAL_MS / 1000} s) after the previous edit; the rest is its
timer firing late on a busy event loop (the child used ${pct(c.cpuLoad)} of a core).`);
  }
  return parts.length === 0 ? 'Every target was met.' : parts.join('\n\n');
}

/** Each run that gave no figures, with its error and the tail of its child's output. */
function failures(r: Results): string {
  const list: [string, unknown][] = [
    ['Catalog run (scenarios 1, 3 FIFO, 5, 6, 7)', r.catalog],
    ['Unknown limit (scenario 2)', r.unknown],
    ['Fairness (scenario 3)', r.fairness],
    ['Burst (scenario 4)', r.burst],
    ...(r.cluster ?? []).map((k): [string, unknown] => [`Distributed, ${k.workers} process(es) (scenario 8)`, k]),
  ];
  const failed = list.filter(([, outcome]) => isFailed(outcome));
  if (failed.length === 0) return '';
  const blocks = failed.map(([name, outcome]) => `### ${name}\n\n\`\`\`\n${(outcome as { failed: string }).failed.replace(/```/g, "'''")}\n\`\`\`\n`);
  return `## Failed runs

These runs gave no figures; the bench went on without them. Their error, and the last output of their process:

${blocks.join('\n')}
`;
}

export function benchmarksMd(r: Results, table: Row[], m: Machine, wallMs: number, loadAfter: string): string {
  return `# Benchmarks

Written by \`npm run bench\` (bench/run.ts); do not edit by hand.

- **Machine**: ${m.cpu}, ${m.cores} cores, ${m.memoryGb.toFixed(1)} GB memory
- **Node**: ${m.node}
- **Date**: ${m.date}
- **Load average** (1/5/15 min) at start: ${m.load}; at end: ${loadAfter} — other work shared the machine
- **Run time**: ${sec(wallMs)}

${markdownTable(table)}

## Where a target is missed, and why

${misses(r, table)}

${failures(r)}${method(r)}
## Reproduce

    npm run bench                          # prints the table, rewrites BENCHMARKS.md
    BENCH_CPU_PROF=/tmp/prof npm run bench # also writes a V8 CPU profile of each core process
`;
}
