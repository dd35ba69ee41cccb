/** BENCHMARKS.md: the machine, the table, how each figure was taken, and why a target was missed. */
import { markdownTable, type Machine, type Results, type Row } from './report.js';
import { EDIT_INTERVAL_MS, EDIT_ROUND_TRIP_MS, PROVIDER } from './scenarios.js';

const pct = (share: number) => `${Math.round(share * 100)} %`;
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function method(r: Results): string {
  const { callMs, limit, windowMs, concurrency } = PROVIDER;
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
  W = ${windowMs / 1000} s: starts at 0, 5 … 45 s, then 60 … 105 s, then 120 … 140 s; makespan ${sec(r.catalog.idealMs)}.
- **Ratios are taken inside one run** (makespan ÷ the minimum at the same scale; B's wait in units of one
  call), so they hold on a noisy machine better than absolute times — but not against other work taking
  the CPU: the core is the bottleneck at these scales, so load shows up in the ratios. During development
  on this shared 2-core machine (2026-11-22, load averages 3–8), repeated runs spread: catalog 1.2–1.8×,
  unknown limit 1.2–2.1×, fairness 1.8–3.9 calls, burst p99 2–19 s. Compare runs at similar load (above).

### Scales, and why

- **1:${r.catalogScale}** for scenarios 1, 2, 3, 5, 6 and 7: a ${callMs / 1000} s call lasts ${callMs / r.catalogScale} ms, the ${windowMs / 1000} s window
  ${windowMs / r.catalogScale} ms. The issue suggests 1:100, and 1:20 if our overhead shows. It does, at both: the core
  spends ~${r.catalog.cpuMsPerImage.toFixed(0)} ms of CPU per image and writes the whole job ~7 times per call (below), so
  a 1000-image job needs ~${sec(r.catalog.cpuMsPerImage * r.catalog.images)} of the child's time whatever the scale. At 1:100 the
  minimum is ${sec(r.catalog.idealMs / 100)} of real time and at 1:20 ${sec(r.catalog.idealMs / 20)}: the makespan would measure the
  core's throughput (ratios of 3–4× at 1:20 in trial runs), not the queue. At 1:${r.catalogScale} the minimum is
  ${sec(r.catalog.idealMs / r.catalogScale)}, close to what the core needs, so the excess left is the core's own overhead, and
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
`;
}

/** The misses, with the figure and its cause; causes were found by profiling the child (BENCH_CPU_PROF). */
function misses(r: Results, table: Row[]): string {
  const missed = (prefix: string) => table.some((row) => row.scenario.startsWith(prefix) && row.met === false);
  const { catalog: c, unknown: u, fairness: f, burst: b } = r;
  const parts: string[] = [];
  if (missed('1 Catalog — makespan') || missed('2 Unknown')) {
    parts.push(`### Makespan (scenarios 1 and 2): ${c.ratio.toFixed(2)}× and ${u.ratio.toFixed(2)}× the minimum

The queue obeys the limit (${c.rateLimited} 429s when told) but the calls do not come round fast enough to use it:
the busiest window saw ${c.maxPerWindow} of the ${PROVIDER.limit} starts allowed. A call holds its slot from submit until its 4
images are written and its batch saved, and the engine persists the whole job around every step. In the
catalog run: ${c.store.saves} job saves averaging ${c.store.msPerSave.toFixed(1)} ms (the record is ${c.store.jobKb.toFixed(0)} KB at the end); saves and
manifest writes add up to ${pct(c.store.busyShare)} of the run's wall time; the child used ${pct(c.cpuLoad)} of a core. Causes:

- \`Engine.change\` (src/core/engine.ts) applies a job's changes one at a time on a per-job chain and awaits
  \`jobs.save(job)\` — the **whole** job, all 250 batches and every image record — each time: batch
  submitted, request id known, each image saved, batch done (+ a pretty-printed manifest). That is ~7 full
  writes per call, 1750 per 1000-image job, O(N²) bytes in all; the ten calls in flight wait for each
  other's writes, and a slot is not freed until its call's writes are through.
- Each write goes through Keyv's default serializer (\`@keyv/serialize\`: a recursive string builder, ~6×
  slower than \`JSON.stringify\` on this record), then \`JobStore.save\` (src/store/jobs.ts) takes one
  global chain to read (and on a state change rewrite) the \`jobs:active\` index, and SQLite commits
  each \`set\` in rollback-journal mode (an fsync per commit) on its one connection.

At 1:1 the same overhead would be ~${pct(c.store.busyShare / r.catalogScale)} of the run and fit in each window's slack (100 starts take
45 s of a 60 s window); it binds here because scaling compresses the provider's time and not ours.
${
  u.rateLimited === 0
    ? `Scenario 2 received **no** 429s: without the limit the bot still never reached it (busiest window ${u.maxPerWindow} of
${PROVIDER.limit}), so the learning path was not exercised at this scale: its ratio measures the same overhead as scenario
1's (back-to-back trials of the two on a quiet machine finished within 1 % of each other).
The pause-on-429 behaviour itself is covered by test/providers/fal.test.ts.`
    : `Scenario 2 adds the 429 round trips: ${u.rateLimited} submits refused, each pausing the lane for its Retry-After.`
}`);
  }
  if (missed('3 Fairness — B')) {
    parts.push(`### Fairness (scenario 3): B done ${f.fairCalls.toFixed(2)} calls after its request

Round-robin does give B the next slot but one (a newcomer goes after the tenant whose turn it is); FIFO
makes B wait ${(c.guestCalls ?? NaN).toFixed(1)} calls. But every slot is held by one of A's calls for a call plus A's saves
(above), so slots free late; and B's own call then waits on the store behind A: its ~7 saves take the same
global \`jobs:active\` chain and the same SQLite connection as A's backlog of saves. The store undoes part of
the fairness the scheduler provides. Per-job keys without a global read-modify-write, and fewer writes per
call, would fix both.`);
  }
  if (missed('4 Burst — 500')) {
    parts.push(`### Burst (scenario 4): p99 ${b.acceptP99Ms.toFixed(0)} ms to accept

Mostly waiting, not computing: in a one-off trial whose calls never finished, 500 acceptances took ~6–11 s
while the process used ~2.5 s of CPU in all, start-up included. \`engine.submit\` answers only after three
SQLite commits have gone through — \`reserveImages\` (the daily cap), the job's
first save, the \`jobs:active\` index rewrite — plus the manifest file. \`JobStore.save\` puts **every save of
every job** on one global serial chain (the index is read from SQLite on each save and rewritten whenever a
job starts or ends), and \`openKeyv\` (src/store/keyv.ts) leaves SQLite in rollback-journal mode, so each
\`set\` is its own fsync'd transaction on one connection. 500 requests arriving together are answered one
after another, behind the saves of the calls already running (${b.msPerSave.toFixed(0)} ms per save on average, queueing
included). In a one-off trial, \`PRAGMA journal_mode=WAL; synchronous=NORMAL\` alone brought p99 from ~11–23 s
to ~1–1.7 s; the rest is the serial chain. The 500 calls then took ${sec(b.makespanMs)} (scaled) where the provider
allowed ${sec(b.idealMs)}: the same chain caps the whole bot's saves per second, across all guilds.`);
  }
  if (missed('5 Memory')) {
    parts.push(`### Memory (scenario 5): peak ${c.maxRssMb.toFixed(0)} MB\n\nImages stream to disk; growth comes from the job record and its serialized copies (${c.store.jobKb.toFixed(0)} KB, written ${c.store.saves} times).`);
  }
  if (missed('6 Edits — progress')) {
    parts.push(`### Edits per interval (scenario 6)\n\nTwo progress edits fell within one ${EDIT_INTERVAL_MS / 1000} s interval: LatestThrottle spaced them by its interval, and the timer fired early against the clock by more than the 2 % slack.`);
  }
  if (missed('6 Edits — batch')) {
    const e = c.edits!;
    parts.push(`### Edit lag (scenario 6): max ${sec(e.lagMaxMs)}

The throttle shows a finished batch at most one interval (${EDIT_INTERVAL_MS / 1000} s) after the previous edit; the rest is its
timer firing late on a busy event loop (the child used ${pct(c.cpuLoad)} of a core, and its loop is the one that runs
the saves above). At 1:${r.catalogScale}, 0.1 s of scaled lag is 20 ms of real delay.`);
  }
  return parts.length === 0 ? 'Every target was met.' : parts.join('\n\n');
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

${method(r)}
## Reproduce

    npm run bench                          # prints the table, rewrites BENCHMARKS.md
    BENCH_CPU_PROF=/tmp/prof npm run bench # also writes a V8 CPU profile of each core process
`;
}
