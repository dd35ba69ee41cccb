// The playground page: a chat channel. Text goes to /api/command as typed; job state arrives over
// server-sent events and is rendered from the server's view models. All text is set as textContent.
const feed = document.getElementById('feed');
const form = document.getElementById('composer');
const input = document.getElementById('command');
const meta = document.getElementById('meta');
const viewer = document.getElementById('viewer');
const cards = new Map(); // job id → { root, render(view) }
const history = [];
let historyAt = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function scrollDown() {
  feed.scrollTop = feed.scrollHeight;
}

function userMessage(text) {
  feed.append(el('div', { class: 'msg user' }, el('div', { class: 'avatar', text: 'You'.slice(0, 1) }), el('div', { class: 'bubble', text })));
}

function botReply(text, kind) {
  const bubble = el('div', { class: `bubble ephemeral${kind === 'error' ? ' error' : ''}`, role: kind === 'error' ? 'alert' : undefined },
    el('div', { class: 'note', text: 'Only you can see this' }),
    el('pre', { class: 'reply', text }));
  feed.append(el('div', { class: `msg bot ${kind}` }, el('div', { class: 'avatar', text: '◆' }), bubble));
  scrollDown();
}

async function post(url, body) {
  const response = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
  const data = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
  return { ok: response.ok, data };
}

function openViewer(view, image) {
  const img = document.getElementById('viewer-img');
  img.src = image.url;
  img.alt = view.prompt;
  document.getElementById('viewer-caption').textContent = `#${image.index} · ${image.width}×${image.height}${image.seed !== null ? ` · seed ${image.seed}` : ''} · ${view.prompt}`;
  viewer.showModal();
}

function jobCard(jobId) {
  const title = el('div', { class: 'job-title' });
  const prompt = el('div', { class: 'prompt' });
  const barFill = el('span');
  const bar = el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, barFill);
  const facts = el('div', { class: 'facts' });
  const failures = el('div', { class: 'failures' });
  const cancel = el('button', { type: 'button', class: 'cancel', text: 'Cancel', onclick: async () => {
    cancel.disabled = true;
    const { ok, data } = await post(`/api/jobs/${jobId}/cancel`);
    if (!ok) botReply(data.error, 'error');
    else render(data.job);
  } });
  const retry = el('button', { type: 'button', class: 'retry', text: 'Retry failed', onclick: async () => {
    retry.disabled = true;
    const { ok, data } = await post(`/api/jobs/${jobId}/retry`);
    retry.disabled = false;
    if (!ok) botReply(data.error, 'error');
    else render(data.job);
  } });
  // a draft job's approved images, sent to the provider's upscaler (results in final/, shown in place)
  const upscale = el('button', { type: 'button', class: 'upscale', text: 'Upscale approved', onclick: async () => {
    upscale.disabled = true;
    const { ok, data } = await post(`/api/jobs/${jobId}/upscale`);
    upscale.disabled = false;
    if (!ok) botReply(data.error, 'error');
    else render(data.job);
  } });
  // The review page: a grid with keyboard review and bulk actions, the one Discord and Slack link to.
  const reviewPage = el('a', { class: 'review-link', target: '_blank', rel: 'noopener', text: 'Review in browser', 'data-testid': 'review-link' });
  const actions = el('div', { class: 'actions' }, cancel, retry, upscale, reviewPage);
  const summary = el('div', { class: 'summary' });
  const costs = el('div', { class: 'costs' });
  const delivered = el('div', { class: 'delivery' });
  const grid = el('div', { class: 'grid', 'data-job': jobId });
  const bubble = el('div', { class: 'bubble job', 'data-job': jobId }, title, prompt, bar, facts, failures, actions, summary, costs, delivered, grid);
  const root = el('div', { class: 'msg bot' }, el('div', { class: 'avatar', text: '◆' }), bubble);
  const tiles = new Map();

  function tile(view, image) {
    let entry = tiles.get(image.index);
    if (!entry) {
      const img = el('img', { src: image.url, alt: `${view.prompt} (image ${image.index})`, loading: 'lazy', width: image.width, height: image.height });
      const thumb = el('button', { type: 'button', class: `thumb${image.nsfw ? ' nsfw' : ''}`, 'aria-label': `View image ${image.index} larger`, onclick: () => openViewer(view, image) }, img);
      thumb.style.setProperty('--ratio', `${image.width} / ${image.height}`);
      const label = el('span', { class: 'status' });
      const review = (status) => async () => {
        const next = entry.status === status ? 'pending' : status;
        const { ok, data } = await post(`/api/jobs/${jobId}/images/${image.index}/review`, { status: next });
        if (!ok) botReply(data.error, 'error');
        else render(data.job);
      };
      const approve = el('button', { type: 'button', class: 'approve', text: 'Approve', onclick: review('approved') });
      const reject = el('button', { type: 'button', class: 'reject', text: 'Reject', onclick: review('rejected') });
      // a rejected image can be made again with a new seed, into this slot (the rejected file is kept)
      const reroll = el('button', { type: 'button', class: 'reroll', text: 'Reroll', onclick: async () => {
        reroll.disabled = true;
        const { ok, data } = await post(`/api/jobs/${jobId}/images/${image.index}/reroll`);
        reroll.disabled = false;
        if (!ok) botReply(data.error, 'error');
        else render(data.job);
      } });
      const root = el('div', { class: 'card', 'data-index': image.index }, thumb,
        el('div', { class: 'card-foot' }, label, el('div', { class: 'buttons' }, approve, reject, reroll)));
      entry = { root, label, approve, reject, reroll, img, status: undefined };
      tiles.set(image.index, entry);
      // a prompt list's gallery is grouped by prompt: a heading before each prompt's first image
      if (image.group && !grid.querySelector(`.group-heading[data-start="${image.group.start}"]`)) {
        const heading = el('div', { class: 'group-heading', 'data-start': image.group.start, 'data-index': image.group.start - 0.5, text: image.group.heading });
        const after = [...grid.children].find((child) => Number(child.dataset.index) > image.group.start - 0.5);
        grid.insertBefore(heading, after ?? null);
      }
      // images can arrive out of order (batches finish in parallel): keep the grid in image order
      const next = [...grid.children].find((child) => Number(child.dataset.index) > image.index);
      grid.insertBefore(root, next ?? null);
    }
    if (entry.img.getAttribute('src') !== image.url) entry.img.src = image.url;
    entry.reroll.hidden = image.status !== 'rejected' || !view.progress.finished;
    entry.reroll.setAttribute('aria-label', `Reroll image ${image.index}`);
    entry.status = image.status;
    entry.root.className = `card ${image.status}`;
    entry.root.dataset.status = image.status;
    entry.label.textContent = `#${image.index} ${{ approved: 'approved', rejected: 'rejected', pending: 'pending' }[image.status]}${image.upscaled ? ' · upscaled' : ''}`;
    entry.approve.setAttribute('aria-pressed', String(image.status === 'approved'));
    entry.reject.setAttribute('aria-pressed', String(image.status === 'rejected'));
    entry.approve.setAttribute('aria-label', `Approve image ${image.index}`);
    entry.reject.setAttribute('aria-label', `Reject image ${image.index}`);
  }

  let shownAt = '';
  function render(view) {
    if (view.updatedAt < shownAt) return; // an older state arriving late (an answer behind an event)
    shownAt = view.updatedAt;
    const p = view.progress;
    bubble.dataset.state = view.state;
    title.textContent = p.title;
    prompt.textContent = `“${p.prompt}”`;
    barFill.style.width = `${p.percent}%`;
    bar.setAttribute('aria-valuenow', p.percent);
    facts.replaceChildren(...p.lines.map((line) => el('span', { text: line })));
    failures.replaceChildren(...p.failures.map((line) => el('div', { text: `⚠ ${line}` })));
    const retryable = p.finished ? view.summary.retryable : 0;
    const upscalable = p.finished ? view.summary.upscalable : 0;
    cancel.hidden = !p.cancellable;
    retry.hidden = retryable === 0;
    retry.textContent = `Retry ${retryable} failed`;
    upscale.hidden = upscalable === 0;
    upscale.textContent = `Upscale ${upscalable} approved`;
    reviewPage.hidden = !view.reviewUrl || !p.finished;
    if (view.reviewUrl) reviewPage.href = view.reviewUrl;
    actions.hidden = !p.cancellable && retryable === 0 && upscalable === 0 && reviewPage.hidden;
    summary.textContent = view.images.length > 0 || p.finished ? view.summary.text : '';
    costs.textContent = p.finished && view.summary.costs ? `Drafts: ${view.summary.costs}` : '';
    if (view.delivery) {
      const d = view.delivery;
      delivered.replaceChildren(
        el('span', { text: `Delivered to ${d.where}: ` }),
        ...d.links.map((link) => el('a', { href: link.url, target: '_blank', rel: 'noopener noreferrer', text: link.file })),
        ...(d.waiting > 0 ? [el('span', { class: 'waiting', text: ` · ${d.waiting} upload(s) waiting to be retried` })] : []),
      );
    }
    for (const image of view.images) tile(view, image);
  }
  return { root, render };
}

function showJob(view, { scroll } = {}) {
  let card = cards.get(view.id);
  if (!card) {
    card = jobCard(view.id);
    cards.set(view.id, card);
    feed.append(card.root);
  }
  const nearBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 120;
  card.render(view);
  if (scroll || nearBottom) scrollDown();
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  history.push(text);
  historyAt = history.length;
  input.value = '';
  fitHeight();
  userMessage(text);
  scrollDown();
  const { data } = await post('/api/command', { text });
  if (data.job) showJob(data.job, { scroll: true });
  else if (data.reply) botReply(data.reply, 'info');
  else botReply(data.error ?? 'No answer.', 'error');
});

// The box is a textarea for prompt lists: Enter sends, Shift+Enter starts a new line (one prompt per
// line). The arrows walk the history only while the box holds one line; otherwise they move the caret.
function fitHeight() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

input.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
    return;
  }
  const oneLine = !input.value.includes('\n');
  if (oneLine && event.key === 'ArrowUp' && historyAt > 0) input.value = history[--historyAt];
  else if (oneLine && event.key === 'ArrowDown' && historyAt < history.length) input.value = history[++historyAt] ?? '';
  else return;
  event.preventDefault();
  fitHeight();
});
input.addEventListener('input', fitHeight);

async function start() {
  const response = await fetch('/api/state');
  const state = await response.json();
  meta.textContent = `providers: ${state.providers.join(', ')} · default ${state.defaultProvider} · up to ${state.maxImages} images`;
  for (const entry of state.entries) {
    if (!entry.job) continue;
    userMessage(entry.text);
    showJob(entry.job);
  }
  scrollDown();
  const events = new EventSource('/events');
  events.addEventListener('job', (event) => showJob(JSON.parse(event.data)));
  events.addEventListener('open', () => document.body.dataset.live = 'true');
  input.focus();
}

start().catch((error) => botReply(`Could not load the playground: ${error.message}`, 'error'));
