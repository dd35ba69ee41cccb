/** BENCHMARKS.md: the machine, the table, how each figure was taken, and why a target was missed. */
import { inFlight } from './chart.js';
import type { ClusterFigures } from './cluster.js';
import { idealMakespan, idealStarts } from './ideal.js';
import { figures, isFailed, markdownTable, type Machine, type Results, type Row } from './report.js';
import { EDIT_INTERVAL_MS, EDIT_ROUND_TRIP_MS, FINISH, PROVIDER, TIGHT, TIGHT_IDEAL_MS, type TightFigures } from './scenarios.js';

const pct = (share: number) => `${Math.round(share * 100)} %`;
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const ms = (value: number) => `${value.toFixed(0)} ms`;
const p50p99 = (s: { p50Ms: number; p99Ms: number }) => `${ms(s.p50Ms)} / ${ms(s.p99Ms)}`;

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
  fractional seconds, because time is scaled) — so a 429 counted is one the bot earned. Scenarios 1–3,
  5–7 and 10 serve a ~1.08 MB PNG of random noise (600×600, made once and cached: incompressible, like a
  real flux PNG); the burst and the tight scenario serve the fake's small default PNG.
- **The core** runs in a child process (\`bench/child.ts\`, \`node --import tsx\`): \`createApp\` with the real
  SQLite store in a temp folder, real image files on disk, the real \`FalProvider\` and \`@fal-ai/client\`, the
  real engine and scheduler. Requests go through \`parseImagineText\` (commands/imagine.ts) and
  \`engine.submit\`, as the adapters do. The child reports its own CPU time (\`process.cpuUsage\`, from the first
  request to the last job finished) and peak RSS (\`process.resourceUsage().maxRSS\`), so the fake's work and
  memory are not counted. The lane is ${concurrency} concurrent calls; in scenarios 1, 3, 5–7 the bot is told the
  limit (${limit} per ${windowMs / 1000} s, as FAL_RATE_LIMIT would), in scenario 2 it is not. Tenant rate limits are
  off and every tenant's plan allows 1000 calls in flight and 1000-image jobs (\`DEFAULT_PLAN=business\`,
  \`PLAN_BUSINESS=1000/1000\`), so the provider's limits are the ones that bind. The fal provider follows each call's status stream
  (its default); for scenario 10's polling run the child builds \`FalProvider\` itself with
  \`statusStream: false\` (and the same download policy as \`createProviders\`).
- **Scaled time**: engine polls every tenth of a call and retries from 1 s, both scaled; the edit throttle is
  ${EDIT_INTERVAL_MS / 1000} s scaled and one edit's round trip ${EDIT_ROUND_TRIP_MS} ms scaled. Scenarios 9 and 10 are not
  scaled: real milliseconds, and the engine's own poll interval (a tenth of fal's typical 5 s call: 500 ms)
  and retry delays.
- **Two clocks, one epoch**: the fake runs in the parent and the core in the child, on the same machine.
  The fake records in epoch ms from \`Date.now()\` (a call's completion is its \`createdAt + latencyMs\`,
  the instant its status turns COMPLETED: \`FalRequest.completedAt\`); the child records epoch ms as
  \`performance.timeOrigin + performance.now()\` (sub-millisecond, read off the same wall clock). A
  difference of the two is therefore good to about 1 ms (\`Date.now()\` truncates), far below the figures.
- **Theoretical minimum** of N equal calls of length T, at most C in flight and at most L starts in any
  window W (\`bench/ideal.ts\`), by simulating the ideal schedule, every call starting as early as both
  limits allow:

      start_k = max(0, start_{k-C} + T, start_{k-L} + W)      makespan = start_{N-1} + T

  With equal T the greedy schedule is optimal. For 250 calls, C = ${concurrency}, T = ${callMs / 1000} s, L = ${limit},
  W = ${windowMs / 1000} s: starts at 0, 5 … 45 s, then 60 … 105 s, then 120 … 140 s; makespan ${sec(ideal)}. For
  scenario 9, ${TIGHT.calls} calls, C = ${TIGHT.concurrency}, T = ${TIGHT.callMs} ms, L = ${TIGHT.limit}, W = ${TIGHT.windowMs / 1000} s: ${TIGHT.limit} calls start at 0, 1 … ${TIGHT.calls / TIGHT.limit - 1} s (the
  window binds, not the slots: a call ends ${TIGHT.windowMs - TIGHT.callMs} ms before its slot is wanted); makespan ${sec(TIGHT_IDEAL_MS)}.
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
- **Real time** for scenarios 9 and 10: the first is a rate gate at a one-second window with 200 ms calls,
  already short; the second is a latency in milliseconds, which scaling would not change.

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
4. 500 requests (10 per tenant, each from its own user, tenants in turn), one every 2 ms over one second,
   as arrivals really come; latency = the request's arrival time to \`engine.submit\` resolved (job persisted
   and queued: the moment an adapter can answer), so a timer that fires late on a busy loop counts against
   it. The core has first accepted and finished one job of its own (a bot that has been up a while: the
   first use of the store's statements and the provider's client is not counted), and the run stops
   once every request is answered (the calls started meanwhile are load on the way). The second line:
   the same 500 in the same tick, to a cold core, then all run to the end. Tenant job limits are raised
   (100 running, 1000 queued, 1000 per user) so nothing is refused; the daily cap stays at its default
   (1000 images), which these requests fit.
5. Peak RSS of the child (\`maxRSS\`) over the catalog run of scenario 1, with ~1 MB images: 1000 images
   ≈ 1.08 GB pass through it. "Idle" is its RSS before the first request.
6. In the catalog run, every progress event of the job is offered to a \`LatestThrottle\` with a
   ${EDIT_INTERVAL_MS / 1000} s (scaled) interval, as the adapters do; sends are counted per rolling ${EDIT_INTERVAL_MS / 1000} s (with 2 %
   slack for timer rounding). The final state, flushed at once when the job finishes (\`LatestThrottle.flush\`,
   by design), is counted apart. Lag = a batch reaching \`done\` → the first send showing that many
   batches done.
7. The child's user + system CPU over the catalog run, divided by the images delivered (download, stream
   to disk, check, persist, schedule — everything but the fake). Target ≤ 10 ms. Beside it, the yardstick:
   \`ImageFiles.writeImage\` alone keeping the same PNG from memory (streamed to disk and checked on the way:
   format, header, every chunk's CRC; rename), 24 times one after another in the parent; and the burst's 1-image jobs.
8. Distributed mode (\`bench/cluster.ts\`): a redis-server on loopback (skipped, with a line, without one) and
   1, 2, then 4 processes (\`bench/cluster-child.ts\`: the real app with REDIS_URL, one shared OUTPUT_DIR), all
   running batches from one BullMQ queue whose global concurrency and rate are the provider's; the first
   also takes the requests. Four tenants ask for 250 images each at once (the catalog's 250 calls, from four
   tenants); makespan = first request to the last job's \`finishedAt\`, against the same minimum as scenario 1.
   The fake's images are its small default PNGs. 429s as in scenario 1.
9. Tight: the fake allows ${TIGHT.limit} submits per rolling ${TIGHT.windowMs / 1000} s and answers each call ${TIGHT.callMs} ms after its
   submit; the lane has ${TIGHT.concurrency} slots. One job of ${TIGHT.calls * TIGHT.imagesPerCall} images (${TIGHT.calls} calls of ${TIGHT.imagesPerCall}) from one tenant, so that nothing but
   the lane's gate stands between the job and the provider: no other job, no tenant turn-taking, one
   admission. Makespan = the request to the job's \`finishedAt\`, against the floor above. Run twice: told
   the limit (\`rateLimit\` ${TIGHT.limit} per ${TIGHT.windowMs} ms, as \`FAL_RATE_LIMIT=${TIGHT.limit}/s\`) and not told.
10. Finish latency: ${FINISH.jobs} jobs of 4 ~1 MB images, one every ${FINISH.everyMs} ms from ${FINISH.tenants} tenants, calls of
    ${FINISH.minCallMs / 1000}–${(FINISH.minCallMs + FINISH.callSpreadMs) / 1000} s (the fake's latency changes every 7 ms, so that a call ends anywhere between two polls,
    as real calls do), ${FINISH.concurrency} slots, the limit told and never reached. For every call that delivered its
    images: the fake's completion time → the last of its image files written (the child wraps
    \`writeImage\` of the store the engine holds). Where the time goes, per call: until the core knows the
    call ended (the stream's last event, or the poll that saw it; the child wraps the provider's
    \`watch\`/\`status\`), then the result (its image URLs), then the four images downloaded, checked and on
    disk. Run with the status stream (the default), then polling, for contrast. The same figure is given
    for the catalog run, whose calls end ten at a time.
`;
}

/**
 * How much later than the floor each rate window reopened: the first start of window k against the
 * first of window k-1, beyond the window itself (the floor reopens exactly one window later).
 */
function reopenings(starts: readonly number[], limit: number, windowMs: number): number[] {
  const out: number[] = [];
  for (let k = limit; k < starts.length; k += limit) out.push(starts[k]! - starts[k - limit]! - windowMs);
  return out;
}

/**
 * A tight run's makespan above the floor, split exactly: the first start (accepting and planning the
 * job), each window reopening late, the last window's own submits one after another, the last call
 * ending after its own length (0 with equal calls), and the tail from the provider's last "done" to the
 * job's end (its images on disk, the job finished).
 */
export function tightExcess(t: Pick<TightFigures, 'timeline' | 'makespanMs'>): { first: number; reopen: number[]; spread: number; lastCall: number; tail: number } {
  const { starts, ends } = t.timeline;
  const reopen = reopenings(starts, TIGHT.limit, TIGHT.windowMs);
  const lastWindow = Math.floor((starts.length - 1) / TIGHT.limit) * TIGHT.limit;
  const lastEnd = Math.max(...ends);
  return {
    first: starts[0]!,
    reopen,
    spread: starts[starts.length - 1]! - starts[lastWindow]!,
    lastCall: lastEnd - starts[starts.length - 1]! - TIGHT.callMs,
    tail: t.makespanMs - lastEnd,
  };
}

const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);

function tightMiss(t: TightFigures): string {
  const e = tightExcess(t);
  const lines = [
    `- ${ms(e.first)} before the first submit reached the provider (the request accepted, the job planned, its batches queued);`,
    `- ${ms(sum(e.reopen))} in all (${e.reopen.map(ms).join(', ')}) of windows reopening later than ${TIGHT.windowMs / 1000} s after the previous one's first start${
      t.rateLimited > 0 ? `, with the pauses after its ${t.rateLimited} 429s (each as long as the provider's Retry-After)` : ''
    };`,
    `- ${ms(e.spread)} from the last window's first submit to its ${TIGHT.limit}th (the floor sends all ${TIGHT.limit} at the same instant; ${
      e.spread / (TIGHT.limit - 1) >= 5
        ? `the core sent them one after another, ~${ms(e.spread / (TIGHT.limit - 1))} apart: its gate lets a submit go once the previous one's request id is recorded`
        : 'the core sent them all but at once'
    });`,
    ...(Math.abs(e.lastCall) >= 1 ? [`- ${ms(e.lastCall)} of a call started earlier ending after the last one;`] : []),
    `- ${ms(e.tail)} from the provider's last "done" to the job's end (that call's images on disk — for all its
  calls: ${p50p99(t.finish)} — then the job finished and saved).`,
  ];
  return `${t.told ? 'Told the limit' : 'Not told the limit'}: ${t.ratio.toFixed(3)}× (${sec(t.makespanMs)} against ${sec(t.idealMs)}), ${t.rateLimited} × 429. The ${ms(t.makespanMs - t.idealMs)} above the floor:

${lines.join('\n')}`;
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
    const list = ran.map((k) => `${k.workers}: ${k.ratio.toFixed(3)}× with ${k.rateLimited} 429s`).join('; ');
    parts.push(`### Distributed (scenario 8): ${list}

Each process pays scenario 1's per-call costs (a poll interval, the downloads, the saves), and in distributed
mode every change of a job is also a read and a write of its record in Redis under the job's lock, plus the
queue's own round trips (a ticket's start and end, the send gate). These add a few milliseconds per call and
do not grow with the number of processes; what grows is the CPU the processes share on this machine.`);
  }
  if (c && (missed('1 Catalog — makespan') || missed('2 Unknown limit — makespan'))) {
    const st = c.finish.stages;
    const reopen = reopenings(c.timeline.starts, PROVIDER.limit, PROVIDER.windowMs);
    const perCallShare = c.finish.p50Ms / callRealMs;
    parts.push(`### Makespan (scenarios 1 and 2): ${c.ratio.toFixed(3)}× and ${u ? `${u.ratio.toFixed(3)}×` : '(not run)'} the minimum

The limit is used (${c.rateLimited} × 429 when told; the busiest window saw ${c.maxPerWindow} of the ${PROVIDER.limit} starts allowed), so
the excess is what each call costs on top of the provider's ${PROVIDER.callMs / 1000} s, paid once per round in the last
window, where the 50 remaining calls run as 5 rounds of 10, and what each window's reopening costs. Per
call, in real time (p50 / p99): the status stream told the core a call had ended ${p50p99(st.seen)} after the
provider finished it, its result came ${p50p99(st.result)} later, and its four ~1 MB images were on disk
${p50p99(st.images)} after that — downloaded in parallel, streamed to disk, each checked as it streams (format from its
bytes, dimensions from its header, every PNG chunk's CRC and its end, since provider output is untrusted): ${p50p99(c.finish)}
in all (row 10, the catalog run's calls). The p50 alone is ${pct(perCallShare)} of a call at 1:${r.catalogScale}, but ${pct(perCallShare / r.catalogScale)} of a real
${PROVIDER.callMs / 1000} s call: the scale multiplies our fixed cost by ${r.catalogScale}, not the provider's. Each submit also waits for its
request id's durable save before the next submit may go (${c.store.saves} job saves in the run, ${c.store.msPerSave.toFixed(1)} ms on
average, group-committed).${
      reopen.length === 0
        ? ''
        : ` Each new window opened ${reopen.map((d) => sec(d)).join(' and ')} (scaled) later than the floor's
(the first call of a window against the first of the one before, ${PROVIDER.windowMs / 1000} s apart at best).`
    }${
      !u
        ? ''
        : u.rateLimited === 0
          ? ' Scenario 2 received no 429s at this scale, so its ratio measures the same cost as scenario 1.'
          : ` Scenario 2 learned the limit from ${u.rateLimited} × 429, each pausing the lane for its Retry-After.`
    }`);
  }
  if (f && missed('3 Fairness — B')) {
    parts.push(`### Fairness (scenario 3): B done ${f.fairCalls.toFixed(2)} calls after its request

A newcomer's call is the next to start (round-robin), and FIFO makes B wait ${(c?.guestCalls ?? NaN).toFixed(1)} calls. B still
waits for a slot to free (all ${PROVIDER.concurrency} hold A's calls) and, when A has used its window, for the next start
the rate limit allows; then its own call and the per-call cost above. The figure varies with load
(1.2–2.4 calls in runs on this machine, the higher ones with other work on it: see the load average above).`);
  }
  const spread = figures(r.burstSpread);
  if (spread && missed('4 Burst — 500')) {
    const cpuBound = spread.loopMaxMs >= spread.acceptP99Ms / 2;
    parts.push(`### Burst, as arrivals come (scenario 4): p99 ${ms(spread.acceptP99Ms)} to accept

p50 ${ms(spread.acceptP50Ms)}, max ${ms(spread.acceptMaxMs)}, for one request every ${spread.spreadMs / spread.requests} ms, to a core that had already run one job
(the first use of each path is not counted). Accepting one costs ~0.2–0.3 ms of
the process's time (validating, reserving its images against the daily cap, planning), but the answer
waits for the job's first save, which is durable before the answer: the job, its tally and the index
of unfinished jobs go out in one group-committed batch, because an accepted job must survive a crash.
While the 500 arrived the store made ${spread.saves} job saves (the running calls' saves among them), ${spread.msPerSave.toFixed(1)} ms each
on average and ${ms(spread.saveMaxMs)} at the slowest, counting the wait for their group's commit; ${
      cpuBound
        ? `and the event loop itself ran up to ${ms(spread.loopMaxMs)} late (p99 ${ms(spread.loopP99Ms)}): CPU on one loop, the
acceptances and the calls started meanwhile, is part of the wait.`
        : `the event loop was never more than ${ms(spread.loopMaxMs)} late (p99 ${ms(spread.loopP99Ms)}), so the wait
is the store's: a request arriving while a commit is being written waits for that commit, then for the
one that carries its own job.`
    }${
      b ? ` All 500 in one tick take ${ms(b.acceptP99Ms)} (the second line): that many share a few commits.` : ''
    } Against Discord's 3 s deadline the slowest answer has a
${Math.floor(3000 / Math.max(1, spread.acceptMaxMs))}× margin.`);
  }
  const w = figures(r.imageWrite);
  if (c && missed('7 Overhead')) {
    parts.push(`### CPU per image (scenario 7): ${c.cpuMsPerImage.toFixed(1)} ms

${
      w
        ? `Keeping one ~1.08 MB image alone — \`ImageFiles.writeImage\` of the same PNG from memory: streamed to disk
and checked on the way (format, header, every PNG chunk's CRC and its end: provider output is untrusted,
a truncated or corrupt body is refused, not shown) — costs ${w.cpuMsPerImage.toFixed(1)} ms of CPU (${pct(w.cpuMsPerImage / c.cpuMsPerImage)} of the figure). That part is the price
of checking every image. The other
${(c.cpuMsPerImage - w.cpuMsPerImage).toFixed(1)} ms per image is receiving it: the download over HTTP (node's client, chunk by chunk
through the download policy's byte count), the status stream and the result, and the engine's records
and saves (${c.store.saves} in the run, a quarter of a save per image at least).`
        : 'The yardstick (keeping one image alone) was not measured in this run.'
    } ${
      b ? `The burst's 1-image jobs with the fake's small PNG cost ${b.cpuMsPerImage.toFixed(1)} ms each: the per-job share (a job accepted,
planned, saved, finished, its manifest written) on top of a much cheaper image.` : ''
    }`);
  }
  const [tt, tu] = [figures(r.tight), figures(r.tightUnknown)];
  if ((tt && missed('9 Tight — 60')) || (tu && missed('9 Tight — same'))) {
    const runs = [tt && missed('9 Tight — 60') ? tt : undefined, tu && missed('9 Tight — same') ? tu : undefined].filter((t): t is TightFigures => t !== undefined);
    parts.push(`### Tight (scenario 9): ${runs.map((t) => `${t.ratio.toFixed(3)}× ${t.told ? 'told' : 'not told'}`).join(', ')}

The floor assumes that a window's ${TIGHT.limit} calls all start the instant it opens and that the job's images
are on disk the instant the last call ends. ${runs.map(tightMiss).join('\n\n')}`);
  }
  const [fs, fp] = [figures(r.finishStream), figures(r.finishPoll)];
  if (fs && missed('10 Finish latency')) {
    const st = fs.stages;
    parts.push(`### Finish latency (scenario 10): p99 ${ms(fs.p99Ms)} with the status stream

Per call (p50 / p99): the stream's event reached the core ${p50p99(st.seen)} after the provider finished,
the result (its image URLs) came ${p50p99(st.result)} later, and the four ~1 MB images were on disk ${p50p99(st.images)}
after that. The images bound it: four downloads of ~1.08 MB in parallel over loopback, each streamed to
disk and checked on the way${
      w ? ` — ${w.cpuMsPerImage.toFixed(1)} ms of CPU per image alone (scenario 7's yardstick), so at least ~${ms((4 * w.cpuMsPerImage) / 2)} for four
on this machine's 2 cores` : ''
    }. The p99 is that stage's: calls end ~${FINISH.everyMs} ms apart but unevenly (their lengths vary), so at times two
calls' images are checked at once, and the fake serving them and the machine's other work take the same
cores.${
      fp ? ` Polling, for contrast, learns of the end ${p50p99(fp.stages.seen)} later (half an interval on average, up to a whole one): ${p50p99(fp)} in all.` : ''
    }`);
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

/** Calls in flight, averaged over time from the first start to the last. */
function meanInFlight(starts: readonly number[], ends: readonly number[]): number {
  const [from, to] = [starts[0] ?? 0, starts[starts.length - 1] ?? 0];
  if (to <= from) return NaN;
  const steps = inFlight(starts, ends);
  let area = 0;
  steps.forEach((step, k) => {
    const next = steps[k + 1]?.t ?? to;
    const [a, b] = [Math.max(from, step.t), Math.min(to, next)];
    if (b > a) area += step.n * (b - a);
  });
  return area / (to - from);
}

const ordinal = (n: number) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? 'th' : (['th', 'st', 'nd', 'rd'][n % 10] ?? 'th')}`;

/** The catalog run's chart, with what it shows in figures; nothing when the catalog run gave none. */
function chartSection(r: Results, chart: string | undefined): string {
  const c = figures(r.catalog);
  if (!c) return '';
  if (!chart) return '\n## The catalog run, as the provider saw it\n\nThe chart could not be drawn in this run (the bench printed why).\n';
  const { starts } = c.timeline;
  const floor = idealStarts({ calls: starts.length, concurrency: PROVIDER.concurrency, callMs: PROVIDER.callMs, limit: PROVIDER.limit, windowMs: PROVIDER.windowMs });
  const at = (k: number) => (starts[k] === undefined ? '—' : sec(starts[k]));
  const marks = [PROVIDER.limit - 1, 2 * PROVIDER.limit - 1, starts.length - 1].filter((k) => k < starts.length);
  return `
## The catalog run, as the provider saw it

![Calls started in the provider's rate window and calls in flight over the catalog run, against both limits and the fastest schedule they allow](${chart})

From the fake's records: when each of the ${starts.length} calls was submitted and when it finished, in production
seconds since the request. Top: calls started in the trailing ${PROVIDER.windowMs / 1000} s against the limit of ${PROVIDER.limit} (the
fake's own window); bottom: calls in flight against the lane's ${PROVIDER.concurrency}. Dashed: the floor's schedule. The
shaded area is the limit left unused. Between its first and its last start the provider had
${meanInFlight(starts, c.timeline.ends).toFixed(1)} of the bot's calls in flight on average (the floor: ${meanInFlight(floor, floor.map((t) => t + PROVIDER.callMs)).toFixed(1)}): a slot stays taken
until the call's images are on disk, so each call holds it past the provider's end. The ${marks.map((k) => `${ordinal(k + 1)} call started at ${at(k)} (the floor: ${sec(floor[k]!)})`).join(', the ')}.
`;
}

/** Each run that gave no figures, with its error and the tail of its child's output. */
function failures(r: Results): string {
  const list: [string, unknown][] = [
    ['Catalog run (scenarios 1, 3 FIFO, 5, 6, 7, 10)', r.catalog],
    ['Unknown limit (scenario 2)', r.unknown],
    ['Fairness (scenario 3)', r.fairness],
    ['Burst, spread over 1 s (scenario 4)', r.burstSpread],
    ['Burst, one tick (scenario 4)', r.burst],
    ['Keeping one image alone (scenario 7)', r.imageWrite],
    ['Tight, limit told (scenario 9)', r.tight],
    ['Tight, limit not told (scenario 9)', r.tightUnknown],
    ['Finish latency, status stream (scenario 10)', r.finishStream],
    ['Finish latency, polling (scenario 10)', r.finishPoll],
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

export function benchmarksMd(r: Results, table: Row[], m: Machine, wallMs: number, loadAfter: string, chart?: string): string {
  return `# Benchmarks

Written by \`npm run bench\` (bench/run.ts); do not edit by hand.

- **Machine**: ${m.cpu}, ${m.cores} cores, ${m.memoryGb.toFixed(1)} GB memory
- **Node**: ${m.node}
- **Date**: ${m.date}
- **Load average** (1/5/15 min) at start: ${m.load}; at end: ${loadAfter} — other work shared the machine
- **Run time**: ${sec(wallMs)}${r.only ? `\n- **Runs**: only ${r.only.join(', ')} (BENCH_ONLY)` : ''}

${markdownTable(table)}
${chartSection(r, chart)}
## Where a target is missed, and why

${misses(r, table)}

${failures(r)}${method(r)}
## Reproduce

    npm run bench                          # prints the table, rewrites BENCHMARKS.md
    BENCH_CPU_PROF=/tmp/prof npm run bench # also writes a V8 CPU profile of each core process
`;
}
