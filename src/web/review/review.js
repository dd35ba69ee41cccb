// The review page: a grid of one job's thumbnails, reviewed with the keyboard or in bulk. State comes
// from `<page>/state` and then live from `<page>/events` (server-sent events: reviews made anywhere);
// reviews go to `<page>/review` as JSON. Text is set as textContent only; nothing inline (the CSP
// forbids it). The proof of who reviews is an HttpOnly cookie this script never sees.
/* global document, location, EventSource */

const base = location.pathname.replace(/\/+$/, '');
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const grid = $('grid');
const viewer = $('viewer');
const errorLine = $('error');
const MARKS = { approved: '✓ approved', rejected: '✕ rejected', pending: '• pending' };

/** the latest state shown; `tiles` by image number */
let view = null;
const tiles = new Map();
let filter = 'all';
let focused = null;
const selected = new Set();
let anchor = null;
let viewing = null;
/** reviews are sent one after another, so each answer is newer than the last */
let sending = Promise.resolve();

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'text') node.textContent = value;
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}

function showError(text) {
  errorLine.textContent = text;
  errorLine.hidden = !text;
}

const imageOf = (n) => view?.images.find((image) => image.index === n);
const matches = (image) => filter === 'all' || (filter === 'flagged' ? image.nsfw : image.status === filter);
/** the numbers shown under the filter, in grid order */
const visible = () => (view ? view.images.filter(matches).map((image) => image.index) : []);

function tileFor(image) {
  const img = el('img', { src: `${base}/thumbs/${image.index}?v=${image.version}`, alt: `Image ${image.index}`, loading: 'lazy', decoding: 'async' });
  const li = el('li', { class: 'tile', role: 'option', tabindex: '-1', 'data-testid': 'tile', 'data-index': image.index },
    img, el('span', { class: 'number', text: String(image.index) }), el('span', { class: 'mark' }), el('span', { class: 'flag', text: 'flagged' }));
  li.addEventListener('click', (event) => clicked(image.index, event));
  li.addEventListener('focus', () => {
    focused = image.index;
    for (const [n, tile] of tiles) tile.tabIndex = n === focused ? 0 : -1;
  });
  return li;
}

/** Shows `next` (a state from the server) unless a newer one is already shown. */
function apply(next) {
  if (view && next.job.updatedAt < view.job.updatedAt) return;
  view = next;
  $('title').textContent = next.job.title;
  $('prompt').textContent = `Job ${next.job.id} · ${next.job.state}`;
  $('title').title = next.job.prompt;
  $('reviewer').textContent = `Reviewing as ${next.reviewer.name}`;
  const counts = $('counts');
  counts.replaceChildren(...['pending', 'approved', 'rejected', 'flagged'].map((status) =>
    el('span', { class: `count ${status}`, 'data-testid': `count-${status}`, text: `${next.counts[status]} ${status}` })));
  for (const image of next.images) {
    let tile = tiles.get(image.index);
    if (!tile) {
      tile = tileFor(image);
      tiles.set(image.index, tile);
      grid.append(tile);
    }
    const img = tile.querySelector('img');
    const src = `${base}/thumbs/${image.index}?v=${image.version}`;
    if (!img.src.endsWith(src)) img.src = src;
    tile.dataset.status = image.status;
    tile.dataset.flagged = String(image.nsfw);
    tile.querySelector('.mark').textContent = MARKS[image.status];
    tile.querySelector('.flag').hidden = !image.nsfw;
    tile.title = [`#${image.index}`, image.status + (image.by ? ` by ${image.by}` : ''), image.heading].filter(Boolean).join(' · ');
    tile.setAttribute('aria-label', `Image ${image.index}, ${image.status}${image.nsfw ? ', flagged' : ''}`);
  }
  layout();
  if (viewing !== null) showInViewer(viewing);
}

/** Filter and selection marks, and a focus that stays on a shown tile. */
function layout() {
  const shown = new Set(visible());
  for (const [n, tile] of tiles) {
    tile.hidden = !shown.has(n);
    tile.dataset.selected = String(selected.has(n));
    tile.setAttribute('aria-selected', String(selected.has(n)));
  }
  $('empty').hidden = shown.size > 0;
  for (const button of document.querySelectorAll('[data-filter]')) button.setAttribute('aria-pressed', String(button.dataset.filter === filter));
  $('selection').textContent = selected.size === 0 ? 'Nothing selected' : `${selected.size} selected`;
  for (const id of ['bulk-approve', 'bulk-reject', 'clear-selection']) $(id).disabled = selected.size === 0;
  if (focused === null || !shown.has(focused)) {
    const first = visible()[0];
    if (first !== undefined) for (const [n, tile] of tiles) tile.tabIndex = n === first ? 0 : -1;
  }
}

function focus(n) {
  const tile = tiles.get(n);
  if (!tile || tile.hidden) return;
  focused = n;
  tile.focus();
  tile.scrollIntoView({ block: 'nearest' });
  if (viewing !== null) showInViewer(n);
}

/** How many tiles a row of the grid holds right now. */
function columns() {
  const shown = [...tiles.values()].filter((tile) => !tile.hidden);
  if (shown.length === 0) return 1;
  const top = shown[0].offsetTop;
  const row = shown.findIndex((tile) => tile.offsetTop !== top);
  return row === -1 ? shown.length : row;
}

function move(by) {
  const order = visible();
  if (order.length === 0) return;
  const at = order.indexOf(focused);
  focus(order[at === -1 ? 0 : Math.max(0, Math.min(order.length - 1, at + by))]);
}

async function review(images, status) {
  const run = async () => {
    const response = await fetch(`${base}/review`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ images, status }),
    });
    const data = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
    if (!response.ok) return showError(data.error ?? `The server answered ${response.status}.`);
    showError('');
    apply(data);
  };
  sending = sending.then(run, run).catch((error) => showError(`The review was not sent: ${error.message}`));
  return sending;
}

/** Reviews the focused image and moves on to the next one shown. */
function reviewFocused(status) {
  const n = viewing ?? focused;
  if (n === null || n === undefined) return;
  const order = visible();
  const next = order[order.indexOf(n) + 1];
  void review([n], status);
  if (next !== undefined) focus(next);
}

function toggle(n) {
  if (selected.has(n)) selected.delete(n);
  else selected.add(n);
  anchor = n;
  layout();
}

function clicked(n, event) {
  if (event.shiftKey && anchor !== null) {
    const order = visible();
    const [a, b] = [order.indexOf(anchor), order.indexOf(n)].sort((x, y) => x - y);
    for (const m of order.slice(a, b + 1)) selected.add(m);
    layout();
    focus(n);
  } else if (event.ctrlKey || event.metaKey) {
    toggle(n);
    focus(n);
  } else {
    focus(n);
    openViewer(n);
  }
}

function showInViewer(n) {
  const image = imageOf(n);
  if (!image) return;
  viewing = n;
  const img = $('viewer-image');
  const src = `${base}/images/${n}?v=${image.version}`;
  if (!img.src.endsWith(src)) img.src = src;
  img.alt = `Image ${n}`;
  $('viewer-caption').textContent = [`#${n}`, `${image.width}×${image.height}`, image.status + (image.by ? ` by ${image.by}` : ''), image.nsfw ? 'flagged' : '', image.heading]
    .filter(Boolean)
    .join(' · ');
}

function openViewer(n) {
  showInViewer(n);
  if (!viewer.open) viewer.showModal();
}

function closeViewer() {
  if (viewer.open) viewer.close();
}

viewer.addEventListener('close', () => {
  const n = viewing;
  viewing = null;
  if (n !== null) focus(n);
});

document.addEventListener('keydown', (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || !view) return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const actions = {
    a: () => reviewFocused('approved'),
    r: () => reviewFocused('rejected'),
    u: () => reviewFocused('pending'),
    x: () => focused !== null && toggle(focused),
    ' ': () => (viewer.open ? closeViewer() : focused !== null && openViewer(focused)),
    ArrowRight: () => move(1),
    ArrowLeft: () => move(-1),
    ArrowDown: () => !viewer.open && move(columns()),
    ArrowUp: () => !viewer.open && move(-columns()),
    Escape: () => {
      if (viewer.open) return closeViewer();
      selected.clear();
      layout();
    },
  };
  const action = actions[key];
  if (!action) return;
  // a button that has the focus must not also be "clicked" by Space
  event.preventDefault();
  action();
});

for (const button of document.querySelectorAll('[data-filter]')) {
  button.addEventListener('click', () => {
    filter = button.dataset.filter;
    layout();
  });
}
$('bulk-approve').addEventListener('click', () => bulk('approved'));
$('bulk-reject').addEventListener('click', () => bulk('rejected'));
$('clear-selection').addEventListener('click', () => {
  selected.clear();
  layout();
});
$('viewer-approve').addEventListener('click', () => reviewFocused('approved'));
$('viewer-reject').addEventListener('click', () => reviewFocused('rejected'));
$('viewer-undo').addEventListener('click', () => reviewFocused('pending'));
$('viewer-close').addEventListener('click', closeViewer);

function bulk(status) {
  const images = [...selected].sort((a, b) => a - b);
  if (images.length === 0) return;
  selected.clear();
  layout();
  void review(images, status);
}

function live() {
  const events = new EventSource(`${base}/events`);
  events.addEventListener('open', () => {
    document.body.dataset.live = 'true';
    $('live').textContent = 'live';
  });
  events.addEventListener('state', (event) => apply(JSON.parse(event.data)));
  events.addEventListener('expired', (event) => {
    showError(JSON.parse(event.data).error);
    events.close();
    document.body.dataset.live = 'false';
    $('live').textContent = 'link expired';
  });
  events.addEventListener('error', () => {
    document.body.dataset.live = 'false';
    $('live').textContent = events.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…';
  });
}

async function start() {
  const response = await fetch(`${base}/state`);
  const data = await response.json().catch(() => ({ error: `The server answered ${response.status}.` }));
  if (!response.ok) {
    $('title').textContent = 'This review page is not open to you';
    return showError(data.error ?? `The server answered ${response.status}.`);
  }
  apply(data);
  live();
}

start().catch((error) => {
  console.error(error);
  showError(`The page could not load: ${error.message}`);
});
