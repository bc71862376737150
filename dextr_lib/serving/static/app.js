// dextr serve: the annotation page. Plain JavaScript, no build step, no network but this server.
"use strict";

const PALETTE = [[255, 40, 40], [40, 140, 255], [40, 220, 60], [255, 200, 0],
                 [220, 60, 255], [0, 220, 220], [255, 120, 0], [255, 80, 170]];
const POINT_RADIUS = 6;      // screen pixels
const CLICK_SIZE = 7;        // screen pixels: half the size of a correction's mark
const HIT_RADIUS = 10;       // screen pixels to grab a point
const POSITIVE = "rgb(22,200,70)", NEGATIVE = "rgb(235,40,40)";
// The token comes in the URL's fragment (#token=..., never sent to the server, so never in its
// logs; ?token= is still read) and travels in a header only, then leaves the address bar.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") ||
              new URLSearchParams(location.search).get("token");
if (TOKEN) history.replaceState(null, "", location.pathname);

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

const S = {
  images: [],          // [{id, name, objects}]
  canUpload: false,
  current: null,       // {id, name, width, height, img}
  objects: [],         // [{id, category, points, bbox, area, overlay, color}]
  selected: null,      // object id
  editing: null,       // object id being re-edited
  points: [],          // [[u, v]] continuous image coordinates (pixel i spans [i, i+1))
  clicks: [],          // corrections after the 4 points: [{u, v, positive}]
  history: [],         // what Undo takes back, last first: "point" | "click" | {before} (a stroke)
  pred: null,          // {key, overlay, bbox, area, score, mask (H*W bytes), edited}
  predKey: null,       // points key of the last request sent
  seq: 0,              // request counter (late answers are dropped)
  view: {scale: 1, ox: 0, oy: 0},
  drag: null,          // {kind: "point"|"click"|"pan"|"paint"|"add", index, sx, sy, moved}
  space: false,
  tool: "clicks",      // "clicks" | "brush" | "eraser"
  brush: 8,            // brush radius, image pixels
  mouse: null,         // [x, y] on the canvas, for the brush's outline
  negatives: false,    // whether the model takes negative clicks (GET /api/model)
};

// -- server calls ------------------------------------------------------------------------------
function idPath(id) { return id.split("/").map(encodeURIComponent).join("/"); }

async function call(method, url, body) {
  const opts = {method, headers: {}};
  if (TOKEN) opts.headers["Authorization"] = "Bearer " + TOKEN;
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, opts);
  } catch (e) {
    throw new Error("cannot reach the dextr server (is it still running?)");
  }
  if (!res.ok) {
    let detail = res.status + " " + res.statusText;
    try {
      const j = await res.json();
      if (j.detail) detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail);
    } catch (e) { /* not JSON */ }
    throw new Error(detail);
  }
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.blob();
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = kind || "";
}
function fail(e) {
  console.error(e);
  say("Error: " + (e.message || e), "error");
}

// -- masks as tinted, outlined overlays ------------------------------------------------------------
function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show " + src));
    img.src = src;
  });
}

// A PNG mask (255 = object) as bytes, one per pixel (row-major), and its size.
async function decodeMask(pngSrc) {
  const img = await loadImage(pngSrc);
  const w = img.naturalWidth, h = img.naturalHeight;
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const src = g.getImageData(0, 0, w, h).data;
  const mask = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) mask[i] = src[i * 4] > 127 ? 1 : 0;
  return {mask, w, h};
}

// A canvas covering the box [x0, y0, x1, y1) of a w-wide mask: the object tinted, its boundary
// pixels in full colour.
function paintOverlay(mask, w, box, color) {
  const [x0, y0, x1, y1] = box;
  const bw = x1 - x0, bh = y1 - y0;
  const c = document.createElement("canvas");
  c.width = bw; c.height = bh;
  const g = c.getContext("2d");
  const out = g.createImageData(bw, bh);
  const d = out.data;
  const inside = (x, y) => x >= x0 && y >= y0 && x < x1 && y < y1 && mask[y * w + x];
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      if (!inside(x, y)) continue;
      const edge = !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
      const i = ((y - y0) * bw + (x - x0)) * 4;
      d[i] = color[0]; d[i + 1] = color[1]; d[i + 2] = color[2];
      d[i + 3] = edge ? 255 : 115;
    }
  }
  g.putImageData(out, 0, 0);
  return c;
}

async function makeOverlay(pngSrc, color) {
  const m = await decodeMask(pngSrc);
  return paintOverlay(m.mask, m.w, [0, 0, m.w, m.h], color);
}

function colorOf(index) { return PALETTE[index % PALETTE.length]; }
function css(color) { return `rgb(${color[0]},${color[1]},${color[2]})`; }

// -- drawing -----------------------------------------------------------------------------------
function resize() {
  const r = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  draw();
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const cur = S.current;
  if (!cur || !cur.img) return;
  const v = S.view;
  ctx.setTransform(dpr * v.scale, 0, 0, dpr * v.scale, dpr * v.ox, dpr * v.oy);
  ctx.imageSmoothingEnabled = v.scale < 1;
  ctx.drawImage(cur.img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  for (const o of S.objects) {
    if (o.id === S.editing || !o.overlay) continue;
    ctx.drawImage(o.overlay, o.bbox[0], o.bbox[1]);
  }
  if (S.pred && S.pred.overlay) ctx.drawImage(S.pred.overlay, S.pred.bbox[0], S.pred.bbox[1]);
  const sel = S.objects.find((o) => o.id === S.selected && o.id !== S.editing);
  if (sel) {
    ctx.lineWidth = 2 / v.scale;
    ctx.strokeStyle = "#fff";
    ctx.setLineDash([6 / v.scale, 4 / v.scale]);
    ctx.strokeRect(sel.bbox[0], sel.bbox[1], sel.bbox[2], sel.bbox[3]);
    ctx.setLineDash([]);
  }
  // Points in screen space, so they keep their size at any zoom.
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const color = css(colorOf(nextColorIndex()));
  S.points.forEach(([u, w], i) => {
    const [x, y] = toScreen(u, w);
    ctx.beginPath();
    ctx.arc(x, y, POINT_RADIUS + 1.5, 0, 2 * Math.PI);
    ctx.fillStyle = "#000";
    ctx.fill();
    ctx.beginPath();
    ctx.arc(x, y, POINT_RADIUS, 0, 2 * Math.PI);
    ctx.fillStyle = color;
    ctx.fill();
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.fillStyle = "#fff";
    ctx.font = "bold 11px system-ui";
    ctx.fillText(String(i + 1), x + POINT_RADIUS + 3, y - POINT_RADIUS);
  });
  // Corrections: a green disc with + (positive), a red square with − (negative).
  for (const c of S.clicks) {
    const [x, y] = toScreen(c.u, c.v);
    const r = CLICK_SIZE;
    ctx.beginPath();
    if (c.positive) ctx.arc(x, y, r, 0, 2 * Math.PI);
    else ctx.rect(x - r, y - r, 2 * r, 2 * r);
    ctx.fillStyle = c.positive ? POSITIVE : NEGATIVE;
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#000";
    ctx.stroke();
    ctx.beginPath();
    ctx.moveTo(x - r + 3, y); ctx.lineTo(x + r - 3, y);
    if (c.positive) { ctx.moveTo(x, y - r + 3); ctx.lineTo(x, y + r - 3); }
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  if (S.tool !== "clicks" && S.mouse) {
    ctx.beginPath();
    ctx.arc(S.mouse[0], S.mouse[1], Math.max(1, S.brush * v.scale), 0, 2 * Math.PI);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = S.tool === "brush" ? "#fff" : "#f87171";
    ctx.setLineDash([4, 3]);
    ctx.stroke();
    ctx.setLineDash([]);
  }
  $("zoom").textContent = Math.round(v.scale * 100) + "%";
}

function nextColorIndex() {
  if (S.editing !== null) return S.objects.findIndex((o) => o.id === S.editing);
  return S.objects.length;
}

// -- view: zoom and pan ------------------------------------------------------------------------
function toScreen(u, v) { return [u * S.view.scale + S.view.ox, v * S.view.scale + S.view.oy]; }
function toImage(x, y) { return [(x - S.view.ox) / S.view.scale, (y - S.view.oy) / S.view.scale]; }

function fit() {
  const cur = S.current;
  if (!cur) return;
  const r = canvas.getBoundingClientRect();
  const s = Math.min(r.width / cur.width, r.height / cur.height) * 0.98;
  S.view = {scale: s, ox: (r.width - cur.width * s) / 2, oy: (r.height - cur.height * s) / 2};
  draw();
}

function zoomAt(factor, x, y) {
  const v = S.view;
  const s = Math.min(32, Math.max(0.02, v.scale * factor));
  const [u, w] = toImage(x, y);
  S.view = {scale: s, ox: x - u * s, oy: y - w * s};
  draw();
}

function eventXY(e) {
  const r = canvas.getBoundingClientRect();
  return [e.clientX - r.left, e.clientY - r.top];
}

function pointAt(x, y) {
  for (let i = S.points.length - 1; i >= 0; i--) {
    const [px, py] = toScreen(...S.points[i]);
    if (Math.hypot(px - x, py - y) <= HIT_RADIUS) return i;
  }
  return -1;
}

function clickAt(x, y) {
  for (let i = S.clicks.length - 1; i >= 0; i--) {
    const [px, py] = toScreen(S.clicks[i].u, S.clicks[i].v);
    if (Math.hypot(px - x, py - y) <= HIT_RADIUS) return i;
  }
  return -1;
}

canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const [x, y] = eventXY(e);
  zoomAt(Math.pow(1.2, -e.deltaY / 100), x, y);
}, {passive: false});

canvas.addEventListener("mousedown", (e) => {
  if (!S.current) return;
  const [x, y] = eventXY(e);
  if (e.button === 2 || e.button === 1 || (e.button === 0 && S.space)) {
    // A right-click that does not move is a negative correction (mouseup).
    S.drag = {kind: "pan", sx: x, sy: y, ox: S.view.ox, oy: S.view.oy, moved: false,
              negative: e.button === 2};
    canvas.classList.add("panning");
    return;
  }
  if (e.button !== 0) return;
  if (S.tool !== "clicks") {
    if (!S.pred || !S.pred.mask || S.points.length !== 4) {
      say("The brush and eraser edit the current mask: set four points first.", "error");
      return;
    }
    S.drag = {kind: "paint", before: S.pred.mask.slice(), last: toImage(x, y), sx: x, sy: y, moved: true};
    paint(toImage(x, y), toImage(x, y));
    return;
  }
  const i = pointAt(x, y);
  const j = i >= 0 ? -1 : clickAt(x, y);
  S.drag = i >= 0 ? {kind: "point", index: i, sx: x, sy: y, moved: false}
         : j >= 0 ? {kind: "click", index: j, sx: x, sy: y, moved: false}
                  : {kind: "add", sx: x, sy: y, moved: false, negative: e.shiftKey};
});

window.addEventListener("mousemove", (e) => {
  if (!S.current) return;
  const [x, y] = eventXY(e);
  const d = S.drag;
  if (S.tool !== "clicks") { S.mouse = [x, y]; if (!d) draw(); }
  if (!d) {
    canvas.classList.toggle("over-point", S.tool === "clicks" && (pointAt(x, y) >= 0 || clickAt(x, y) >= 0));
    return;
  }
  if (Math.hypot(x - d.sx, y - d.sy) > 3) d.moved = true;
  if (d.kind === "pan") {
    S.view.ox = d.ox + x - d.sx;
    S.view.oy = d.oy + y - d.sy;
    draw();
  } else if (d.kind === "point" && d.moved) {
    S.points[d.index] = clampToImage(toImage(x, y));
    draw();
  } else if (d.kind === "click" && d.moved) {
    const [u, v] = clampToImage(toImage(x, y));
    Object.assign(S.clicks[d.index], {u, v});
    draw();
  } else if (d.kind === "paint") {
    const p = toImage(x, y);
    paint(d.last, p);
    d.last = p;
  }
});

window.addEventListener("mouseup", (e) => {
  const d = S.drag;
  if (!d) return;
  S.drag = null;
  canvas.classList.remove("panning");
  const [x, y] = eventXY(e);
  if ((d.kind === "point" || d.kind === "click") && d.moved) {
    requestMask();
  } else if (d.kind === "add" && !d.moved) {
    if (S.points.length < 4 && !d.negative) addPoint(toImage(x, y));
    else addClick(toImage(x, y), !d.negative);
  } else if (d.kind === "pan" && !d.moved && d.negative && S.tool === "clicks") {
    addClick(toImage(x, y), false);
  } else if (d.kind === "paint") {
    S.history.push({before: d.before});
    S.pred.edited = (S.pred.edited || 0) + 1;
    canvas.dataset.edits = String(S.pred.edited);
    say(`Mask edited by hand (${maskArea()} pixels). Enter accepts it; Backspace undoes the stroke.`, "ok");
  }
});

// -- brush and eraser: pixel edits of the current mask -------------------------------------------
function setTool(tool) {
  S.tool = tool;
  for (const t of ["clicks", "brush", "eraser"]) $("tool-" + t).classList.toggle("active", t === tool);
  canvas.classList.toggle("painting", tool !== "clicks");
  if (tool === "clicks") S.mouse = null;
  draw();
}

function setBrush(r) {
  S.brush = Math.min(200, Math.max(1, Math.round(r)));
  $("brush-size").value = String(S.brush);
  $("brush-label").textContent = S.brush + " px";
  draw();
}

// Set (brush) or clear (eraser) the pixels within S.brush of the segment a-b (image coordinates).
function paint(a, b) {
  const c = S.current, m = S.pred.mask, r = S.brush, value = S.tool === "brush" ? 1 : 0;
  const x0 = Math.max(0, Math.floor(Math.min(a[0], b[0]) - r)), x1 = Math.min(c.width - 1, Math.ceil(Math.max(a[0], b[0]) + r));
  const y0 = Math.max(0, Math.floor(Math.min(a[1], b[1]) - r)), y1 = Math.min(c.height - 1, Math.ceil(Math.max(a[1], b[1]) + r));
  const dx = b[0] - a[0], dy = b[1] - a[1], len2 = dx * dx + dy * dy;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const px = x + 0.5, py = y + 0.5;  // pixel centre
      const t = len2 ? Math.min(1, Math.max(0, ((px - a[0]) * dx + (py - a[1]) * dy) / len2)) : 0;
      if (Math.hypot(px - a[0] - t * dx, py - a[1] - t * dy) <= r) m[y * c.width + x] = value;
    }
  }
  refreshOverlay();
}

function maskArea() {
  let n = 0;
  for (const v of S.pred.mask) n += v;
  return n;
}

// The prediction's overlay drawn again from its (edited) mask.
function refreshOverlay() {
  const c = S.current, m = S.pred.mask, w = c.width;
  let x0 = w, y0 = c.height, x1 = -1, y1 = -1;
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < w; x++) {
      if (!m[y * w + x]) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      y1 = y;
    }
  }
  if (x1 < 0) { S.pred.overlay = null; S.pred.bbox = [0, 0, 0, 0]; }
  else {
    S.pred.overlay = paintOverlay(m, w, [x0, y0, x1 + 1, y1 + 1], colorOf(nextColorIndex()));
    S.pred.bbox = [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
  }
  draw();
}

// The edited mask as a base64 PNG of the whole photo (255 = object), as POST /api/objects takes it.
function maskPng() {
  const c = S.current, m = S.pred.mask;
  const cv = document.createElement("canvas");
  cv.width = c.width; cv.height = c.height;
  const g = cv.getContext("2d");
  const img = g.createImageData(c.width, c.height);
  for (let i = 0; i < m.length; i++) {
    const v = m[i] ? 255 : 0;
    img.data[i * 4] = img.data[i * 4 + 1] = img.data[i * 4 + 2] = v;
    img.data[i * 4 + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return cv.toDataURL("image/png").split(",")[1];
}

function clampToImage([u, v]) {
  const c = S.current;
  return [Math.min(Math.max(u, 0), c.width), Math.min(Math.max(v, 0), c.height)];
}

// -- points and masks --------------------------------------------------------------------------
function addPoint([u, v]) {
  const c = S.current;
  if (u < 0 || v < 0 || u > c.width || v > c.height) {
    say("Click inside the image.", "error");
    return;
  }
  if (S.points.length >= 4) return;
  S.points.push([u, v]);
  S.history.push("point");
  if (S.points.length < 4) {
    say(`${S.points.length} of 4 points`);
    draw();
  } else {
    requestMask();
  }
}

// A correction after the four points: the mask is predicted again with it.
function addClick([u, v], positive) {
  const c = S.current;
  if (S.points.length < 4) {
    say("Set the four extreme points first; then click to correct the mask (Shift+click or right-click: not the object).");
    return;
  }
  if (u < 0 || v < 0 || u > c.width || v > c.height) { say("Click inside the image.", "error"); return; }
  S.clicks.push({u, v, positive});
  S.history.push("click");
  requestMask(true);
}

// Continuous position u -> pixel index u - 0.5 (the API's [x, y] convention).
function pixel(u, v) { return [Math.round((u - 0.5) * 100) / 100, Math.round((v - 0.5) * 100) / 100]; }

function apiPoints() { return S.points.map(([u, v]) => pixel(u, v)); }

function apiClicks(positive) {
  return S.clicks.filter((c) => c.positive === positive).map((c) => pixel(c.u, c.v));
}

// What the mask is predicted from: points and clicks (the key of a prediction).
function apiInput() { return {points: apiPoints(), positive: apiClicks(true), negative: apiClicks(false)}; }

function clearPrediction() {
  S.pred = null;
  S.predKey = null;
  canvas.dataset.mask = "none";
}

// newClick: the request is for a correction just added; if the server refuses it (a negative
// click on a model without the channel, a click outside the crop) it is taken back.
async function requestMask(newClick) {
  if (S.points.length !== 4 || !S.current) return;
  const input = apiInput();
  const key = JSON.stringify(input);
  const seq = ++S.seq;
  const imageId = S.current.id;
  const color = colorOf(nextColorIndex());
  const t0 = performance.now();
  S.predKey = key;
  canvas.dataset.mask = "pending";
  say("Running the network…");
  draw();
  try {
    const r = await call("POST", "api/predict", {image_id: imageId, ...input, format: "png", crop: true});
    if (seq !== S.seq || !S.current || S.current.id !== imageId) return;  // superseded
    // The whole photo's mask, so that the brush and eraser can edit it.
    const mask = new Uint8Array(r.width * r.height);
    let overlay = null;
    if (r.area > 0) {
      const crop = await decodeMask("data:image/png;base64," + r.mask);
      const [bx, by] = r.bbox;
      for (let y = 0; y < crop.h; y++) mask.set(crop.mask.subarray(y * crop.w, (y + 1) * crop.w), (by + y) * r.width + bx);
      overlay = paintOverlay(crop.mask, crop.w, [0, 0, crop.w, crop.h], color);
    }
    if (seq !== S.seq) return;
    // Brush edits belong to one prediction: strokes on the old mask leave the undo history.
    S.history = S.history.filter((h) => typeof h === "string");
    S.pred = {key, overlay, bbox: r.bbox, area: r.area, score: r.score, mask, edited: 0};
    canvas.dataset.edits = "0";
    canvas.dataset.mask = "ready";
    draw();
    const ms = performance.now() - t0;
    $("latency").textContent = `mask in ${Math.round(ms)} ms (network ${Math.round(r.timing.model_ms)} ms)`;
    const n = S.clicks.length;
    if (r.area === 0) say("The model found no object for these points; adjust them.", "error");
    else say(`Mask: ${r.area} pixels, score ${r.score.toFixed(2)}` +
             (n ? `, ${n} correction${n > 1 ? "s" : ""}` : "") + ". Enter accepts" +
             (S.editing !== null ? " the edit." : "; click to correct it."), "ok");
  } catch (e) {
    if (seq !== S.seq) return;
    canvas.dataset.mask = "error";
    fail(e);
    if (newClick && S.history[S.history.length - 1] === "click") {
      // The server refused the correction: take it back, the mask before it still stands.
      S.clicks.pop();
      S.history.pop();
      if (S.pred) canvas.dataset.mask = "ready";
      say("Error: " + e.message + " (the click was taken back)", "error");
      draw();
    }
  }
}

// Undo the last thing done: a brush/eraser stroke, a correction or an extreme point.
function undoPoint() {
  const last = S.history.pop();
  if (last === undefined) return;
  if (typeof last === "object") {
    S.pred.mask = last.before;
    S.pred.edited = Math.max(0, S.pred.edited - 1);
    canvas.dataset.edits = String(S.pred.edited);
    refreshOverlay();
    say(`Stroke undone (${maskArea()} pixels).`);
    return;
  }
  if (last === "click") {
    S.clicks.pop();
    requestMask();
    return;
  }
  S.points.pop();
  S.seq++;
  clearPrediction();
  say(S.points.length ? `${S.points.length} of 4 points` : "");
  draw();
}

function clearPoints() {
  S.points = [];
  S.clicks = [];
  S.history = [];
  S.seq++;
  clearPrediction();
  if (S.editing !== null) { S.editing = null; renderObjects(); }
  say("");
  draw();
}

async function accept() {
  if (!S.current) return;
  if (S.points.length !== 4) { say("Set four points first.", "error"); return; }
  const input = $("class");
  const category = input.value.trim();
  if (!category) {
    input.classList.add("missing");
    input.focus();
    say("Type a class name (or pick one), then press Enter.", "error");
    return;
  }
  input.classList.remove("missing");
  const body = apiInput();
  const pred = S.pred && S.pred.key === JSON.stringify(body) ? S.pred : null;
  if (pred && pred.edited) body.mask = maskPng();  // the hand-edited mask, not the prediction
  body.category = category;
  try {
    let o;
    if (S.editing !== null) {
      o = await call("PUT", `api/objects/${S.editing}`, body);
      const i = S.objects.findIndex((x) => x.id === S.editing);
      S.objects[i] = await objectView(o, i, pred);
      S.editing = null;
    } else {
      o = await call("POST", "api/objects", {image_id: S.current.id, ...body});
      S.objects.push(await objectView(o, S.objects.length, pred));
    }
    S.selected = o.id;
    S.points = [];
    S.clicks = [];
    S.history = [];
    S.seq++;
    clearPrediction();
    addClass(category);
    canvas.dataset.objects = String(S.objects.length);
    renderObjects();
    draw();
    say(`Saved object ${o.id} (${o.category}).`, "ok");
    refreshList();
  } catch (e) { fail(e); }
}

async function objectView(o, index, pred) {
  const color = colorOf(index);
  let overlay = pred && pred.overlay;
  if (!overlay && o.area > 0) {
    const blob = await call("GET", `api/objects/${o.id}/mask.png?crop=true`);
    const url = URL.createObjectURL(blob);
    try { overlay = await makeOverlay(url, color); } finally { URL.revokeObjectURL(url); }
  }
  return {...o, overlay, color};
}

async function deleteObject(id) {
  try {
    await call("DELETE", `api/objects/${id}`);
    S.objects = S.objects.filter((o) => o.id !== id);
    if (S.selected === id) S.selected = null;
    if (S.editing === id) clearPoints();
    canvas.dataset.objects = String(S.objects.length);
    renderObjects();
    draw();
    say(`Deleted object ${id}.`, "ok");
    refreshList();
  } catch (e) { fail(e); }
}

function editObject(id) {
  const o = S.objects.find((x) => x.id === id);
  if (!o) return;
  if (!o.points) { say("This object has no extreme points to edit.", "error"); return; }
  S.editing = id;
  S.selected = id;
  S.points = o.points.map(([x, y]) => [x + 0.5, y + 0.5]);
  S.clicks = [...o.positive.map(([x, y]) => ({u: x + 0.5, v: y + 0.5, positive: true})),
              ...o.negative.map(([x, y]) => ({u: x + 0.5, v: y + 0.5, positive: false}))];
  S.history = [];
  $("class").value = o.category;
  renderObjects();
  requestMask();
}

// -- lists ---------------------------------------------------------------------------------------
function addClass(name) {
  const list = $("classes");
  if ([...list.options].some((o) => o.value === name)) return;
  const opt = document.createElement("option");
  opt.value = name;
  list.appendChild(opt);
}

function renderImages() {
  const ul = $("images");
  ul.textContent = "";
  let done = 0, total = 0;
  for (const im of S.images) {
    const li = document.createElement("li");
    li.dataset.id = im.id;
    if (S.current && S.current.id === im.id) li.className = "current";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = im.name;
    label.title = im.name;
    const badge = document.createElement("span");
    badge.className = "badge" + (im.objects ? " some" : "");
    badge.textContent = im.objects;
    li.append(label, badge);
    li.addEventListener("click", () => openImage(im.id));
    ul.appendChild(li);
    if (im.objects) done++;
    total += im.objects;
  }
  $("done").textContent = done;
  $("total").textContent = S.images.length;
  $("nobjects").textContent = total;
}

function renderObjects() {
  const ul = $("objects");
  ul.textContent = "";
  S.objects.forEach((o) => {
    const li = document.createElement("li");
    if (o.id === S.selected) li.classList.add("selected");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = css(o.color);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `#${o.id} ${o.category}` + (o.id === S.editing ? " (editing)" : "");
    label.title = `${o.area} pixels`;
    const edit = document.createElement("button");
    edit.textContent = "edit";
    edit.title = "Re-edit: drag its points, Enter saves (E)";
    edit.addEventListener("click", (e) => { e.stopPropagation(); editObject(o.id); });
    const del = document.createElement("button");
    del.textContent = "✕";
    del.title = "Delete (Del)";
    del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(o.id); });
    li.append(sw, label, edit, del);
    li.addEventListener("click", () => { S.selected = o.id; renderObjects(); draw(); });
    ul.appendChild(li);
  });
}

async function refreshList() {
  try {
    const r = await call("GET", "api/images");
    S.images = r.images;
    S.canUpload = r.can_upload;
    $("upload-box").hidden = !r.can_upload;
    // The path may wrap after a "/" only, never inside a folder or file name.
    const annfile = $("annfile");
    annfile.textContent = "Saving to ";
    r.annotations_file.split(/(?<=\/)/).forEach((part, i) => {
      if (i) annfile.appendChild(document.createElement("wbr"));
      annfile.appendChild(document.createTextNode(part));
    });
    r.classes.forEach(addClass);
    renderImages();
    if (!S.images.length) {
      $("empty").textContent = r.can_upload ? "Upload a photo to start (left)."
                                            : "The image folder has no photos.";
    }
  } catch (e) { fail(e); }
}

// -- images ------------------------------------------------------------------------------------
async function openImage(id) {
  if (S.current && S.current.id === id) return;
  S.seq++;
  S.points = [];
  S.clicks = [];
  S.history = [];
  S.editing = null;
  S.selected = null;
  clearPrediction();
  say("Loading " + id + "…");
  try {
    const info = await call("GET", "api/images/" + idPath(id));
    // Fetched with the token header, shown from a blob: an <img src> cannot carry a header.
    const blobUrl = URL.createObjectURL(await call("GET", "api/files/" + idPath(id)));
    let img;
    try { img = await loadImage(blobUrl); } finally { URL.revokeObjectURL(blobUrl); }
    if (img.naturalWidth !== info.width || img.naturalHeight !== info.height) {
      throw new Error(`the browser shows ${id} at ${img.naturalWidth}x${img.naturalHeight}, ` +
                      `the server reads ${info.width}x${info.height}`);
    }
    S.current = {id, name: info.name, width: info.width, height: info.height, img};
    $("image-name").textContent = info.name;
    $("empty").hidden = true;
    S.objects = [];
    for (let i = 0; i < info.objects.length; i++) S.objects.push(await objectView(info.objects[i], i, null));
    canvas.dataset.objects = String(S.objects.length);
    renderImages();
    renderObjects();
    fit();
    say(`${info.name}: ${info.width}x${info.height}, ${info.objects.length} object(s).`);
  } catch (e) { fail(e); }
}

function step(delta) {
  if (!S.images.length) return;
  const i = S.current ? S.images.findIndex((im) => im.id === S.current.id) : -1;
  const j = Math.min(S.images.length - 1, Math.max(0, i + delta));
  if (j !== i) openImage(S.images[j].id);
}

$("upload").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  say("Uploading " + file.name + "…");
  try {
    const r = await call("POST", "api/images", form);
    await refreshList();
    await openImage(r.image_id);
  } catch (err) { fail(err); }
  e.target.value = "";
});

// -- keyboard and buttons ------------------------------------------------------------------------
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
$("accept").addEventListener("click", accept);
$("undo").addEventListener("click", undoPoint);
$("clear").addEventListener("click", clearPoints);
$("fit").addEventListener("click", fit);
for (const t of ["clicks", "brush", "eraser"]) $("tool-" + t).addEventListener("click", () => setTool(t));
$("brush-size").addEventListener("input", (e) => setBrush(Number(e.target.value)));
canvas.addEventListener("mouseleave", () => { S.mouse = null; draw(); });
$("actual").addEventListener("click", () => {
  const r = canvas.getBoundingClientRect();
  zoomAt(1 / S.view.scale, r.width / 2, r.height / 2);
});

window.addEventListener("keydown", (e) => {
  const typing = e.target === $("class");
  if (e.key === "Enter") { e.preventDefault(); accept(); return; }
  if (e.key === "Escape") { if (typing) e.target.blur(); clearPoints(); return; }
  if (typing) return;
  if (e.key === " ") { S.space = true; e.preventDefault(); return; }
  const k = e.key.toLowerCase();
  if (k === "backspace" || (k === "z" && (e.ctrlKey || e.metaKey))) { e.preventDefault(); undoPoint(); }
  else if (k === "arrowleft" || k === "p") step(-1);
  else if (k === "arrowright" || k === "n") step(1);
  else if (k === "f") fit();
  else if (k === "1") $("actual").click();
  else if ((k === "delete" || k === "x") && S.selected !== null) deleteObject(S.selected);
  else if (k === "e" && S.selected !== null) editObject(S.selected);
  else if (k === "c") setTool("clicks");
  else if (k === "b") setTool("brush");
  else if (k === "r") setTool("eraser");
  else if (k === "[") setBrush(S.brush / 1.25);
  else if (k === "]") setBrush(S.brush * 1.25 + 0.5);
});
window.addEventListener("keyup", (e) => { if (e.key === " ") S.space = false; });
window.addEventListener("resize", resize);

// For scripts and tests: where an image pixel is on the page.
window.dextr = {
  pageXY(x, y) {
    const r = canvas.getBoundingClientRect();
    const [sx, sy] = toScreen(x + 0.5, y + 0.5);
    return [r.left + sx, r.top + sy];
  },
  state: S,
  maskArea: () => (S.pred && S.pred.mask ? maskArea() : 0),
};

(async function start() {
  resize();
  try {
    const m = await call("GET", "api/model");
    S.negatives = m.takes_negatives;
    $("model").textContent = `${m.arch} · ${m.device} · ${m.precision}`;
    const ability = $("ability");
    ability.textContent = m.takes_negatives ? "corrections: positive and negative"
                                            : "corrections: positive only (no negative-click channel)";
    ability.className = "small " + (m.takes_negatives ? "yes" : "no");
  } catch (e) { fail(e); }
  await refreshList();
  if (S.images.length) openImage(S.images[0].id);
})();
