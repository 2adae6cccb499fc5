"use strict";
// The attention explorer: every byte it shows is in the page (see vitprobe/pipeline/explorer.py
// for the data layout). Per (model, image, block) the attention rows arrive as zlib-compressed
// uint8 codes of shape (heads, 1 + P, P), the CLS query first then the P patch queries, over the
// P patch keys, with one float32 scale per row: value = code * scale / 255.

const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const MODELS = new Map(DATA.models.map((m) => [m.key, m]));
const VIEWS = [
  ...DATA.comparisons.filter((keys) => keys.every((k) => MODELS.has(k))),
  ...DATA.models.map((m) => [m.key]),
];
const BLOCKS = [...new Set(DATA.models.flatMap((m) => m.blocks))].sort((a, b) => a - b);
const MAX_HEADS = Math.max(...DATA.models.map((m) => m.heads));
const IMAGE_COUNT = Math.min(...DATA.models.map((m) => m.image_ids.length));
const OVERLAY_ALPHA = 0.65;
// Anchor colours of the heat scale (dark violet -> red -> pale yellow), interpolated linearly.
const HEAT = [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]];

const state = { image: 0, view: 0, block: BLOCKS[0], head: "mean", layer: "query", qx: 0.5, qy: 0.5, pinned: false };
const $ = (id) => document.getElementById(id);
const rowCache = new Map();
const imageCache = new Map();
let panels = [];
let generation = 0;

function heat(t) {
  const x = Math.min(Math.max(t, 0), 1) * (HEAT.length - 1);
  const i = Math.min(Math.floor(x), HEAT.length - 2);
  const f = x - i;
  return HEAT[i].map((c, j) => Math.round(c + f * (HEAT[i + 1][j] - c)));
}

function bytesOf(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

async function inflate(base64) {
  const stream = new Blob([bytesOf(base64)]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function float32s(base64) {
  const bytes = bytesOf(base64);
  const view = new DataView(bytes.buffer);
  const out = new Float64Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

// The decoded rows of one (model, image, block), decoded once.
async function blockRows(model, image, block) {
  const key = `${model.key}/${image}/${block}`;
  if (!rowCache.has(key)) {
    const packed = model.attention[image][model.blocks.indexOf(block)];
    rowCache.set(key, inflate(packed.codes).then((codes) => ({ codes, scales: float32s(packed.scales) })));
  }
  return rowCache.get(key);
}

function cropImage(key) {
  if (!imageCache.has(key)) {
    const img = new Image();
    img.src = DATA.crops[key];
    imageCache.set(key, img.decode().then(() => img));
  }
  return imageCache.get(key);
}

function queryPatch(model) {
  const g = model.grid;
  const col = Math.min(g - 1, Math.floor(state.qx * g));
  const row = Math.min(g - 1, Math.floor(state.qy * g));
  return { row, col, index: row * g + col };
}

// The values the overlay shows, dequantised exactly as documented, or a reason why there are none.
async function layerValues(model) {
  const P = model.grid * model.grid;
  if (state.layer === "rollout") return { values: model.rollout[state.image] };
  if (isAttribution()) {
    const maps = (model.attribution || {})[attributionMethod()];
    if (!maps) return { reason: `no ${attributionMethod()} maps for this model` };
    if (!maps[state.image]) return { reason: "no attribution maps for this image (attribution.images)" };
    return { values: maps[state.image] };
  }
  if (!model.blocks.includes(state.block)) return { reason: `block ${state.block} not exported for this model` };
  if (state.head !== "mean" && state.head >= model.heads) return { reason: `this model has ${model.heads} heads` };
  const { codes, scales } = await blockRows(model, state.image, state.block);
  const row = state.layer === "cls" ? 0 : 1 + queryPatch(model).index;
  const heads = state.head === "mean" ? [...Array(model.heads).keys()] : [state.head];
  const values = new Float64Array(P);
  for (const h of heads) {
    const r = h * (1 + P) + row;
    const step = scales[r] / 255;
    for (let k = 0; k < P; k++) values[k] += codes[r * P + k] * step;
  }
  if (heads.length > 1) for (let k = 0; k < P; k++) values[k] /= heads.length;
  return { values: Array.from(values) };
}

function formatValue(v) {
  return v === 0 ? "0" : v.toPrecision(3);
}

function drawScale(panel, top) {
  const bar = panel.querySelector(".scale canvas");
  const ctx = bar.getContext("2d");
  for (let x = 0; x < bar.width; x++) {
    ctx.fillStyle = `rgb(${heat(x / (bar.width - 1)).join(",")})`;
    ctx.fillRect(x, 0, 1, bar.height);
  }
  const ticks = panel.querySelector(".ticks");
  ticks.replaceChildren(
    ...[0, 0.25, 0.5, 0.75, 1].map((f) => {
      const span = document.createElement("span");
      span.style.left = `${f * 100}%`;
      span.textContent = formatValue(f * top);
      return span;
    }),
  );
}

// Draws one panel for render number `current`; a newer render (the state changed while this one
// awaited its crop or rows) owns the panel, so this one then draws nothing.
async function renderPanel(panel, current) {
  const model = MODELS.get(panel.dataset.model);
  const canvas = panel.querySelector("canvas.map");
  const ctx = canvas.getContext("2d");
  const img = await cropImage(model.crops[state.image]);
  const result = await layerValues(model);
  if (current !== generation) return;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const cell = canvas.width / model.grid;
  const status = panel.querySelector(".status");
  if (result.values) {
    const values = result.values;
    const top = Math.max(...values);
    for (let k = 0; k < values.length; k++) {
      const [r, g, b] = heat(top > 0 ? values[k] / top : 0);
      ctx.fillStyle = `rgba(${r},${g},${b},${OVERLAY_ALPHA})`;
      ctx.fillRect((k % model.grid) * cell, Math.floor(k / model.grid) * cell, cell, cell);
    }
    drawScale(panel, top);
    canvas.dataset.values = values.join(",");
    canvas.dataset.max = String(top);
    status.textContent = describe(model);
  } else {
    canvas.dataset.values = "";
    canvas.dataset.max = "";
    status.textContent = result.reason;
  }
  const q = queryPatch(model);
  if (state.layer === "query") {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Math.max(1, cell / 8);
    ctx.strokeRect(q.col * cell, q.row * cell, cell, cell);
  }
  Object.assign(canvas.dataset, {
    image: state.image, block: state.block, head: state.head, layer: state.layer, query: q.index,
  });
  updateChart(panel);
}

// Attribution layers are named "attribution:<method>" (the methods the run computed).
function isAttribution() {
  return state.layer.startsWith("attribution:");
}

function attributionMethod() {
  return state.layer.slice("attribution:".length);
}

function describe(model) {
  const image = model.image_ids[state.image];
  if (state.layer === "rollout") return `${image}: attention rollout (CLS row over patches, all blocks)`;
  if (isAttribution()) {
    return `${image}: ${attributionMethod()} attribution map of the ${model.attribution_targets[state.image]}`;
  }
  const who = state.head === "mean" ? "mean over heads" : `head ${state.head}`;
  const q = queryPatch(model);
  const row = state.layer === "cls" ? "CLS query" : `query patch ${q.index} (row ${q.row}, col ${q.col})`;
  return `${image}: block ${state.block}, ${who}, ${row}; 8-bit rows, error at most scale/510`;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// Mean attention distance by block, one point per head (as the distance_by_block figure).
function buildChart(panel, model) {
  const width = 380, height = 300, left = 48, right = 12, top = 12, bottom = 40;
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}` });
  const yMax = Math.max(1, ...model.distance.map((d) => d.px)) * 1.05;
  const x = (b) => left + ((b + 0.5) / model.depth) * (width - left - right);
  const y = (v) => height - bottom - (v / yMax) * (height - top - bottom);
  svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }, chart);
  svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }, chart);
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    svg("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end" }, chart).textContent = v.toFixed(0);
  }
  const every = Math.ceil(model.depth / 12);
  for (let b = 0; b < model.depth; b += every) {
    svg("text", { x: x(b), y: height - bottom + 14, "text-anchor": "middle" }, chart).textContent = b;
  }
  svg("text", { x: (left + width) / 2, y: height - 6, "text-anchor": "middle" }, chart).textContent = "block";
  const label = svg("text", { x: 12, y: (top + height - bottom) / 2, "text-anchor": "middle" }, chart);
  label.setAttribute("transform", `rotate(-90 12 ${(top + height - bottom) / 2})`);
  label.textContent = "mean attention distance (px)";
  const means = [];
  for (let b = 0; b < model.depth; b++) {
    const rows = model.distance.filter((d) => d.block === b);
    if (rows.length) means.push(`${x(b)},${y(rows.reduce((s, d) => s + d.px, 0) / rows.length)}`);
  }
  svg("polyline", { class: "mean", points: means.join(" ") }, chart);
  const spread = (width - left - right) / model.depth / (model.heads + 1);
  for (const d of model.distance) {
    const exported = model.blocks.includes(d.block);
    const point = svg("circle", {
      class: exported ? "head-point" : "head-point missing",
      cx: x(d.block) + (d.head - (model.heads - 1) / 2) * spread, cy: y(d.px), r: 4,
      "data-block": d.block, "data-head": d.head,
    }, chart);
    svg("title", {}, point).textContent =
      `block ${d.block}, head ${d.head}: ${d.px.toFixed(1)} px` + (exported ? "" : " (block not exported)");
    if (exported) {
      point.addEventListener("click", () => {
        state.block = d.block;
        state.head = d.head;
        if (state.layer === "rollout" || isAttribution()) state.layer = "query";
        render();
      });
    }
  }
  return chart;
}

function updateChart(panel) {
  for (const point of panel.querySelectorAll(".head-point")) {
    const block = Number(point.dataset.block), head = Number(point.dataset.head);
    const inBlock = state.layer !== "rollout" && !isAttribution() && block === state.block;
    point.classList.toggle("selected", inBlock && head === state.head);
    point.classList.toggle("in-block", inBlock && state.head === "mean");
  }
}

function setQueryFromPointer(event) {
  const canvas = event.currentTarget;
  state.qx = Math.min(Math.max(event.offsetX / canvas.clientWidth, 0), 0.999999);
  state.qy = Math.min(Math.max(event.offsetY / canvas.clientHeight, 0), 0.999999);
}

function buildPanel(model) {
  const panel = document.createElement("section");
  panel.className = "panel";
  panel.dataset.model = model.key;
  panel.innerHTML = `<h2></h2><div class="row"><div>
    <canvas class="map" tabindex="0"></canvas>
    <div class="scale"><canvas width="256" height="1"></canvas><div class="ticks"></div></div>
    <div class="status"></div></div></div>`;
  panel.querySelector("h2").textContent = model.label;
  const canvas = panel.querySelector("canvas.map");
  canvas.width = canvas.height = model.image_size;
  canvas.addEventListener("mousemove", (event) => {
    if (state.pinned) return;
    setQueryFromPointer(event);
    render();
  });
  canvas.addEventListener("click", (event) => {
    state.pinned = !state.pinned;
    setQueryFromPointer(event);
    render();
  });
  const row = panel.querySelector(".row");
  row.appendChild(buildChart(panel, model));
  const missing = model.depth - model.blocks.length;
  if (missing) {
    const note = document.createElement("p");
    note.className = "chart-note";
    note.textContent = `Grey points: ${missing} of the ${model.depth} blocks are not in this page (explorer.blocks); ` +
      "their distances come from the run's tables, their attention is not stored here.";
    row.appendChild(note);
  }
  return panel;
}

function moveQuery(dx, dy) {
  const model = MODELS.get(VIEWS[state.view][0]);
  const q = queryPatch(model);
  const col = Math.min(Math.max(q.col + dx, 0), model.grid - 1);
  const row = Math.min(Math.max(q.row + dy, 0), model.grid - 1);
  state.qx = (col + 0.5) / model.grid;
  state.qy = (row + 0.5) / model.grid;
}

function fillSelect(select, options) {
  select.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
}

function syncControls() {
  $("image").value = String(state.image);
  $("view").value = String(state.view);
  $("block").value = String(state.block);
  $("head").value = String(state.head);
  $("layer").value = state.layer;
  const q = queryPatch(MODELS.get(VIEWS[state.view][0]));
  $("query-label").textContent = `query: row ${q.row}, col ${q.col}${state.pinned ? " (pinned)" : ""}`;
}

function buildPanels() {
  panels = VIEWS[state.view].map((key) => buildPanel(MODELS.get(key)));
  $("panels").replaceChildren(...panels);
}

async function render() {
  const current = ++generation;
  document.body.dataset.busy = "1";
  syncControls();
  try {
    for (const panel of panels) {
      await renderPanel(panel, current);
      if (current !== generation) return;
    }
  } catch (error) {
    console.error(error);
  }
  if (current === generation) document.body.dataset.busy = "0";
}

function init() {
  const first = DATA.models[0];
  fillSelect($("image"), [...Array(IMAGE_COUNT).keys()].map((i) => [i, first.image_ids[i]]));
  fillSelect($("view"), VIEWS.map((keys, i) => [i, keys.join(" vs ")]));
  fillSelect($("block"), BLOCKS.map((b) => [b, b]));
  fillSelect($("head"), [["mean", "mean over heads"], ...[...Array(MAX_HEADS).keys()].map((h) => [h, h])]);
  const methods = [...new Set(DATA.models.flatMap((m) => Object.keys(m.attribution || {})))];
  $("layer").append(...methods.map((m) => new Option(`${m} (attribution)`, `attribution:${m}`)));
  const bind = (id, apply) => $(id).addEventListener("change", (event) => { apply(event.target.value); render(); });
  bind("image", (v) => { state.image = Number(v); });
  bind("view", (v) => { state.view = Number(v); buildPanels(); });
  bind("block", (v) => { state.block = Number(v); });
  bind("head", (v) => { state.head = v === "mean" ? "mean" : Number(v); });
  bind("layer", (v) => { state.layer = v; });
  document.addEventListener("keydown", (event) => {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (!(event.key in moves) || event.target instanceof HTMLSelectElement) return;
    event.preventDefault();
    moveQuery(...moves[event.key]);
    render();
  });
  moveQuery(0, 0); // snap the starting query to the centre of a patch
  buildPanels();
  render();
}

init();
