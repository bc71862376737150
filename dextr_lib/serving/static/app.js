// dextr serve: the annotation page. Plain JavaScript, no build step, no network but this server.
"use strict";

const PALETTE = [[255, 40, 40], [40, 140, 255], [40, 220, 60], [255, 200, 0],
                 [220, 60, 255], [0, 220, 220], [255, 120, 0], [255, 80, 170]];
const POINT_RADIUS = 6;      // screen pixels
const HIT_RADIUS = 10;       // screen pixels to grab a point
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
  pred: null,          // {key, overlay, bbox, area, score}
  predKey: null,       // points key of the last request sent
  seq: 0,              // request counter (late answers are dropped)
  view: {scale: 1, ox: 0, oy: 0},
  drag: null,          // {kind: "point"|"pan", index, sx, sy, moved}
  space: false,
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

// A canvas covering the mask's box: the object tinted, its boundary pixels in full colour.
async function makeOverlay(pngSrc, color) {
  const img = await loadImage(pngSrc);
  const w = img.naturalWidth, h = img.naturalHeight;
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const src = g.getImageData(0, 0, w, h).data;
  const out = g.createImageData(w, h);
  const d = out.data;
  const inside = (x, y) => x >= 0 && y >= 0 && x < w && y < h && src[(y * w + x) * 4] > 127;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (!inside(x, y)) continue;
      const edge = !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1);
      const i = (y * w + x) * 4;
      d[i] = color[0]; d[i + 1] = color[1]; d[i + 2] = color[2];
      d[i + 3] = edge ? 255 : 115;
    }
  }
  g.putImageData(out, 0, 0);
  return c;
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
    S.drag = {kind: "pan", sx: x, sy: y, ox: S.view.ox, oy: S.view.oy, moved: false};
    canvas.classList.add("panning");
    return;
  }
  if (e.button !== 0) return;
  const i = pointAt(x, y);
  S.drag = i >= 0 ? {kind: "point", index: i, sx: x, sy: y, moved: false}
                  : {kind: "click", sx: x, sy: y, moved: false};
});

window.addEventListener("mousemove", (e) => {
  if (!S.current) return;
  const [x, y] = eventXY(e);
  const d = S.drag;
  if (!d) {
    canvas.classList.toggle("over-point", pointAt(x, y) >= 0);
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
  }
});

window.addEventListener("mouseup", (e) => {
  const d = S.drag;
  if (!d) return;
  S.drag = null;
  canvas.classList.remove("panning");
  const [x, y] = eventXY(e);
  if (d.kind === "point" && d.moved) {
    requestMask();
  } else if (d.kind === "click" && !d.moved) {
    addPoint(toImage(x, y));
  }
});

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
  if (S.points.length >= 4) {
    say("Four points are set: drag one to adjust, Enter to accept, Esc to clear.");
    return;
  }
  S.points.push([u, v]);
  if (S.points.length < 4) {
    say(`${S.points.length} of 4 points`);
    draw();
  } else {
    requestMask();
  }
}

function apiPoints() {
  // Continuous position u -> pixel index u - 0.5 (the library's [x, y] convention).
  return S.points.map(([u, v]) => [Math.round((u - 0.5) * 100) / 100, Math.round((v - 0.5) * 100) / 100]);
}

function clearPrediction() {
  S.pred = null;
  S.predKey = null;
  canvas.dataset.mask = "none";
}

async function requestMask() {
  if (S.points.length !== 4 || !S.current) return;
  const points = apiPoints();
  const key = JSON.stringify(points);
  const seq = ++S.seq;
  const imageId = S.current.id;
  const color = colorOf(nextColorIndex());
  const t0 = performance.now();
  S.predKey = key;
  canvas.dataset.mask = "pending";
  say("Running the network…");
  draw();
  try {
    const r = await call("POST", "api/predict", {image_id: imageId, points, format: "png", crop: true});
    if (seq !== S.seq || !S.current || S.current.id !== imageId) return;  // superseded
    const overlay = r.area > 0 ? await makeOverlay("data:image/png;base64," + r.mask, color) : null;
    if (seq !== S.seq) return;
    S.pred = {key, overlay, bbox: r.bbox, area: r.area, score: r.score};
    canvas.dataset.mask = "ready";
    draw();
    const ms = performance.now() - t0;
    $("latency").textContent = `mask in ${Math.round(ms)} ms (network ${Math.round(r.timing.model_ms)} ms)`;
    if (r.area === 0) say("The model found no object for these points; adjust them.", "error");
    else say(`Mask: ${r.area} pixels, score ${r.score.toFixed(2)}. Enter accepts` +
             (S.editing !== null ? " the edit." : "."), "ok");
  } catch (e) {
    if (seq === S.seq) { canvas.dataset.mask = "error"; fail(e); }
  }
}

function undoPoint() {
  if (!S.points.length) return;
  S.points.pop();
  S.seq++;
  clearPrediction();
  say(S.points.length ? `${S.points.length} of 4 points` : "");
  draw();
}

function clearPoints() {
  S.points = [];
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
  const points = apiPoints();
  const pred = S.pred && S.pred.key === JSON.stringify(points) ? S.pred : null;
  try {
    let o;
    if (S.editing !== null) {
      o = await call("PUT", `api/objects/${S.editing}`, {points, category});
      const i = S.objects.findIndex((x) => x.id === S.editing);
      S.objects[i] = await objectView(o, i, pred);
      S.editing = null;
    } else {
      o = await call("POST", "api/objects", {image_id: S.current.id, points, category});
      S.objects.push(await objectView(o, S.objects.length, pred));
    }
    S.selected = o.id;
    S.points = [];
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
};

(async function start() {
  resize();
  try {
    const m = await call("GET", "api/model");
    $("model").textContent = `${m.arch} · ${m.device} · ${m.precision}`;
  } catch (e) { fail(e); }
  await refreshList();
  if (S.images.length) openImage(S.images[0].id);
})();
