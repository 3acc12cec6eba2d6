// braggscope's page: the queue, the run in progress with its live maps or curve, the beam, the latest runs.
// One WebSocket brings everything (its first message carries the key); requests go by fetch with the key.
// window.braggscope holds what the page shows, for scripts and tests (maps, updates, latencies).
"use strict";

const LUTS = {  // 64 colours each (matplotlib's viridis, RdBu_r, magma, twilight_shifted)
  viridis: "44015446075a470d6047136548186a481d6f482374482878472d7b46327e453781443b844240864045883e49893d4e8a3a538b38588c365c8d34608d32648e31688e2f6c8e2d708e2c738e2a778e297b8e277f8e26828e24868e238a8d218e8d20928c1f968b1f9a8a1f9e891fa18721a58523a98326ad812ab07f2fb47c35b7793bbb7542be714ac16d52c5695ac86465cb5e6ece5877d15381d34d8bd64695d840a0da39aadc32b5de2bc0df25cae11fd5e21adfe318eae51af4e61efde725",
  diverging: "05306109386d0e41791249841752901b5a9c1f63a8246aae2a71b22f79b53480b93a87bd3f8ec04695c4529dc85fa5cd6eaed27bb6d687beda93c6de9dcbe1a7d0e4b1d5e7bbdaeac5dfeccfe4efd5e7f1dbeaf2e1edf3e7f0f4edf2f5f3f5f6f8f4f2f9f0ebf9ebe3fae7dcfbe3d4fcdecdfdd9c4fbd0b9fac8aff8bfa4f7b799f6af8ef4a683f09c7beb9172e6866ae17860dc6e57d7634fd25849cc4c44c6413ec13639bb2a34b61f2eae172aa21328960f278a0b257f082373042167001f",
  magma: "00000402010903031206051a0a08220e0b2b130d34180f3d1d114722115029115a2f116336106b3d0f71440f764a107952137c59157e5f187f651a806b1d81721f817822817e24828426818b2981912b81982d809e2f7fa5317eab337cb2357bba3878c03a76c73d73cd4071d3436ed9466bdf4a68e44f64e95462ed5a5ff1605df4675cf66e5cf8765cfa7d5efb8560fc8e64fd9668fe9d6cfea571feac76feb47bfebb81fec287feca8dfed194fed89afde0a1fde7a9fceeb0fcf6b8fcfdbf",
  cyclic: "30143734113e3911463f125146145e4c176b521c795723855a2b905c359a5d3ea15e49a95e53ae5f5db26066b6616fb96278bb6580bd6989be6e91c07499c17ca2c285a9c48eb1c599b8c8a4becab0c5cdbccbd1c8d0d6d2d5dbdad8dfe0d9e2e2d8dfe0d6d9ddd0cfdacac3d6c2b6d3b9a8d0b09bcda78ecb9d82c89477c6896cc37f64c0755ebc6b59b86255b35953ae5051a84750a13f509a3750922f508828507f2350751e4f6b1b4d60184a5615464b134242123e3a113a3412382f1436",
};
const MAPS = [  // field, title, colour map, scale
  ["intensity", "intensity", "viridis", "range"],
  ["strain", "strain", "diverging", "symmetric"],
  ["tilt_altitude", "tilt altitude", "magma", "zero"],
  ["tilt_azimuth", "tilt azimuth", "cyclic", "azimuth"],
];
const KEY = "braggscope-key";
const bs = window.braggscope = {
  role: null, connected: false, queue: null, run: null, beam: null, runs: null, maps: null, curve: null,
  updates: [], latencies: [], messages: 0,
};
const $ = (id) => document.getElementById(id);
const lut = Object.fromEntries(Object.entries(LUTS).map(([name, hex]) => {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return [name, out];
}));

// -- the key ----------------------------------------------------------------------------------------------
function takeKeyFromUrl() {  // #key=... (a fragment: never sent to a server, removed from the address bar)
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    sessionStorage.setItem(KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}
function apiKey() { return sessionStorage.getItem(KEY); }
function showLogin(message) {
  $("login").hidden = false;
  $("main").hidden = true;
  $("forget").hidden = true;
  if (message) $("login-msg").textContent = message;
}
$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("key-input").value.trim());
  $("key-input").value = "";
  connect();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  if (socket) socket.close();
  showLogin("The key is forgotten.");
});

// -- the feed -----------------------------------------------------------------------------------------------
let socket = null, retry = null;
function connect() {
  if (!apiKey()) { showLogin(); return; }
  if (socket) socket.close();
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/ws");
  socket = ws;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify({ key: apiKey() }));
  ws.onmessage = (ev) => {
    bs.messages += 1;
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      (HANDLERS[msg.type] || (() => {}))(msg.data);
    } else {
      const message = decode(ev.data);
      if (message.header.type === "maps") showLiveMaps(message);
      else if (message.header.type === "curve") showCurve(message, $("curve"), true);
    }
  };
  ws.onclose = (ev) => {
    if (socket !== ws) return;
    bs.connected = false;
    setBadge("connection", "not connected", "off");
    if (ev.code === 4401) { sessionStorage.removeItem(KEY); showLogin("This key is refused: give an operator or observer key."); return; }
    clearTimeout(retry);
    retry = setTimeout(connect, 2000);
  };
}
const HANDLERS = {
  hello(data) {
    bs.role = data.role;
    bs.connected = true;
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget").hidden = false;
    $("beamline").textContent = data.beamline || "";
    setBadge("connection", "connected", "on");
    setBadge("role", data.role, "");
    $("controls").hidden = data.role !== "operator";
    if (data.role === "operator") loadPlans();
    if (!bs.beam) showBeam({});
  },
  refused(text) { showLogin(text); },
  queue(data) { bs.queue = data; showQueue(data); },
  run(data) { bs.run = data; showRun(); },
  beam(data) { bs.beam = data; showBeam(data); },
  runs(data) { bs.runs = data; showRuns(data); },
  bus(line) { $("bus-line").textContent = "document bus: " + line; },
};
function setBadge(id, text, kind) {
  const el = $(id);
  el.textContent = text;
  el.className = "badge " + (kind || "");
}

// -- binary messages: uint32 header length, JSON header, padding to 4, float32 arrays --------------------
function decode(buffer) {
  const n = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, n)));
  const start = 4 + n + ((4 - ((4 + n) % 4)) % 4);
  const arrays = {};
  for (const [name, entry] of Object.entries(header.arrays || {})) {
    const count = entry.shape.reduce((a, b) => a * b, 1);
    arrays[name] = { shape: entry.shape, values: new Float32Array(buffer, start + entry.offset, count) };
  }
  return { header, arrays };
}

// -- the queue -------------------------------------------------------------------------------------------
function itemText(item) {
  if (!item) return "";
  const args = (item.args || []).map((a) => JSON.stringify(a));
  const kwargs = Object.entries(item.kwargs || {}).map(([k, v]) => k + "=" + JSON.stringify(v));
  return item.name + "(" + args.concat(kwargs).join(", ") + ")";
}
function showQueue(state) {
  const s = state.status || {};
  $("status-line").textContent = state.error ? state.error :
    `manager ${s.manager_state || "?"}, RunEngine ${s.re_state || "?"}, ${s.items_in_queue ?? 0} queued` +
    (s.worker_environment_exists ? "" : ", environment closed");
  $("status-line").className = "status" + (state.error ? " message bad" : "");
  enableControls(s);
  const running = state.running;
  $("running-name").textContent = running ? "running: " + itemText(running) + (running.user ? "  (" + running.user + ")" : "") : "nothing running";
  showRun();
  const list = $("queue-items");
  list.replaceChildren(...(state.queue || []).map((item) => {
    const li = document.createElement("li");
    li.textContent = itemText(item);
    return li;
  }));
  const body = $("history").tBodies[0];
  body.replaceChildren(...(state.history || []).map((item) => {
    const r = item.result || {};
    return row([time(r.time_stop), itemText(item), r.exit_status || "", r.msg || ""], ["", "", "exit-" + (r.exit_status || ""), "msg"]);
  }));
}
// the queue accepts a pause while its RunEngine runs, and resume, stop, abort and halt only once the
// manager itself says 'paused' (it says so a moment after the RunEngine pauses; a request in between is
// refused): each button is enabled when the status the page last read says the queue would accept it
const ACCEPTED = {
  start: (s) => s.manager_state === "idle",
  pause: (s) => s.re_state === "running",
  pause_now: (s) => s.re_state === "running",
  resume: (s) => s.manager_state === "paused",
  stop: (s) => s.manager_state === "paused",
  abort: (s) => s.manager_state === "paused",
  halt: (s) => s.manager_state === "paused",
};
function enableControls(s) {
  document.querySelectorAll("#controls button[data-action]").forEach((b) => {
    const accepted = ACCEPTED[b.dataset.action];
    b.disabled = accepted ? !accepted(s) : false;
  });
}
function showRun() {
  const run = bs.run;
  const running = bs.queue && bs.queue.running;
  const bar = $("progress"), text = $("progress-text");
  if (!run) { bar.value = 0; text.textContent = ""; return; }
  const total = run.total || 0;
  bar.max = total || 1;
  bar.value = Math.min(run.done, total || 0);
  const what = `scan ${run.scan_id ?? "?"} ${run.plan_name}${run.sample ? " (" + run.sample + ")" : ""}`;
  const status = run.exit_status ? `: ${run.exit_status}${run.reason ? " - " + run.reason : ""}` : (running ? "" : "");
  text.textContent = `${what}: ${run.done}${total ? " of " + total : ""} points${status}`;
}
function row(cells, classes) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (c instanceof Node) td.append(c); else td.textContent = c ?? "";
    if (classes && classes[i]) td.className = classes[i];
    tr.append(td);
  });
  return tr;
}
function time(t) { return t ? new Date(t * 1000).toLocaleTimeString() : ""; }

// -- requests (operator) ----------------------------------------------------------------------------------
async function request(path, options) {
  const response = await fetch(path, { ...options, headers: { ...(options || {}).headers, Authorization: "ApiKey " + apiKey() } });
  let body = {};
  try { body = await response.json(); } catch (e) { body = {}; }
  return { status: response.status, body };
}
function say(text, good) {
  $("action-msg").textContent = text;
  $("action-msg").className = "message " + (good ? "good" : "bad");
}
async function control(action, params) {
  const { status, body } = await request("/api/control/" + action, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params || {}),
  });
  say(body.msg || body.detail || `${action}: HTTP ${status}`, status === 200 && body.ok);
  return body;
}
bs.control = control;
document.querySelectorAll("#controls button[data-action]").forEach((b) =>
  b.addEventListener("click", () => control(b.dataset.action)));
async function loadPlans() {
  const { body } = await request("/api/plans");
  const select = $("add-plan");
  bs.plans = body.plans || [];
  select.replaceChildren(...bs.plans.map((p) => new Option(p.name, p.name)));
  const help = () => {
    const plan = bs.plans.find((p) => p.name === select.value);
    $("add-help").textContent = plan ? `${plan.name}(${plan.parameters.join(", ")}): ${plan.description}` : "";
  };
  select.onchange = help;
  help();
}
$("add-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  let args, kwargs;
  try { args = JSON.parse($("add-args").value || "[]"); kwargs = JSON.parse($("add-kwargs").value || "{}"); }
  catch (e) { say("args must be a JSON list and kwargs a JSON object: " + e.message, false); return; }
  control("add", { item: { item_type: "plan", name: $("add-plan").value, args, kwargs } });
});

// -- maps -------------------------------------------------------------------------------------------------
function mapFigures(container) {
  if (container.children.length) return;
  for (const [field, title] of MAPS) {
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    canvas.dataset.field = field;
    const caption = document.createElement("figcaption");
    caption.innerHTML = `<span>${title}</span><span class="scale"></span>`;
    figure.append(canvas, caption);
    container.append(figure);
  }
}
function scaleOf(values, kind) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!Number.isFinite(lo)) return [0, 1];
  if (kind === "symmetric") { const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; return [-m, m]; }
  if (kind === "zero") return [0, hi > 0 ? hi : 1];
  if (kind === "azimuth") return [-180, 180];
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}
function drawMap(canvas, array, colours, kind) {
  const [ny, nx] = array.shape;
  if (canvas.width !== nx || canvas.height !== ny) { canvas.width = nx; canvas.height = ny; }
  const [lo, hi] = scaleOf(array.values, kind);
  const image = new ImageData(nx, ny);
  const px = image.data, n = colours.length / 3 - 1, values = array.values;
  for (let iy = 0; iy < ny; iy++) {
    const out = (ny - 1 - iy) * nx;  // y grows upwards
    for (let ix = 0; ix < nx; ix++) {
      const v = values[iy * nx + ix], o = 4 * (out + ix);
      if (!Number.isFinite(v)) { px[o + 3] = 0; continue; }
      const c = 3 * Math.max(0, Math.min(n, Math.round(((v - lo) / (hi - lo)) * n)));
      px[o] = colours[c]; px[o + 1] = colours[c + 1]; px[o + 2] = colours[c + 2]; px[o + 3] = 255;
    }
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  return [lo, hi];
}
function drawMaps(container, message) {
  mapFigures(container);
  for (const [field, , colours, kind] of MAPS) {
    const canvas = container.querySelector(`canvas[data-field="${field}"]`);
    const array = message.arrays[field];
    if (!array) continue;
    const [lo, hi] = drawMap(canvas, array, lut[colours], kind);
    const unit = (message.header.units || {})[field] || "";
    canvas.parentElement.querySelector(".scale").textContent = `${fmt(lo)} to ${fmt(hi)} ${unit}`;
  }
}
function fmt(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : v.toFixed(2); }
let mapFrame = null;
function showLiveMaps(message) {
  if (mapFrame !== null && bs.pendingMaps) {  // not drawn yet: this one replaces it, with its latencies too
    message.header.latency = bs.pendingMaps.header.latency.concat(message.header.latency);
  }
  bs.pendingMaps = message;
  if (mapFrame !== null) return;
  mapFrame = requestAnimationFrame(() => {
    const m = bs.pendingMaps;
    bs.pendingMaps = null;
    mapFrame = null;
    drawMaps($("live-maps"), m);
    const h = m.header;
    $("map-title").textContent = `scan ${h.scan_id ?? "?"}`;
    $("map-info").textContent = `${h.n_frames}${h.total ? " of " + h.total : ""} frames in the maps` +
      (h.finished ? " (run ended)" : "") + `; x ${h.x[0]} to ${h.x[1]} um, y ${h.y[0]} to ${h.y[1]} um`;
    bs.maps = { header: h, arrays: m.arrays };
    requestAnimationFrame(() => {  // the frame holding these pixels is out: the documents' latency ends
      const now = Date.now() / 1000;
      for (const [n, sent] of h.latency || []) bs.latencies.push([n, now - sent]);
      bs.updates.push({ time: now, run: h.run, n_frames: h.n_frames, finished: h.finished });
    });
  });
}

// -- curves -----------------------------------------------------------------------------------------------
function showCurve(message, canvas, live) {
  const h = message.header, x = message.arrays.x.values, y = message.arrays.y.values;
  if (live) {
    bs.curve = { header: h, x: Array.from(x), y: Array.from(y) };
    $("curve-title").textContent = `scan ${h.scan_id ?? "?"}: ${h.field} vs ${h.motor}`;
  }
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, m = 40;
  ctx.clearRect(0, 0, W, H);
  if (!x.length) return;
  const [x0, x1] = scaleOf(x, "range"), [y0, y1] = scaleOf(y, "range");
  const X = (v) => m + ((v - x0) / (x1 - x0)) * (W - 1.5 * m), Y = (v) => H - m + ((y0 - v) / (y1 - y0)) * (H - 1.5 * m);
  ctx.strokeStyle = "#aab1bd"; ctx.strokeRect(m, m / 2, W - 1.5 * m, H - 1.5 * m);
  ctx.fillStyle = "#5d6575"; ctx.font = "11px sans-serif";
  ctx.fillText(fmt(x0), m, H - m / 2 + 8); ctx.fillText(fmt(x1), W - m, H - m / 2 + 8);
  ctx.fillText(fmt(y1), 2, m / 2 + 8); ctx.fillText(fmt(y0), 2, H - m);
  ctx.strokeStyle = "#1f5fbf"; ctx.beginPath();
  let best = 0;
  x.forEach((v, i) => { if (i === 0) ctx.moveTo(X(v), Y(y[i])); else ctx.lineTo(X(v), Y(y[i])); if (y[i] > y[best]) best = i; });
  ctx.stroke();
  ctx.fillStyle = "#1f5fbf";
  x.forEach((v, i) => ctx.fillRect(X(v) - 2, Y(y[i]) - 2, 4, 4));
  const info = `${x.length} points; maximum ${fmt(y[best])} at ${h.motor} = ${fmt(x[best])}` + (h.finished ? " (run ended)" : "");
  if (live) $("curve-info").textContent = info;
  return info;
}

// -- beam ---------------------------------------------------------------------------------------------------
function showBeam(beam) {
  const rows = [];
  const add = (label, value) => { if (value !== undefined && value !== null && value !== "") rows.push([label, value]); };
  add("ring current", beam.machine_current !== undefined ? fmt(beam.machine_current) + " mA" : undefined);
  add("shutter", beam.machine_shutter === undefined ? undefined : (beam.machine_shutter ? "open" : "closed"));
  add("machine", beam.machine_status);
  add("next refill", beam.machine_refill_countdown === undefined ? undefined :
    (beam.machine_refill_countdown < 0 ? "none scheduled" : fmt(beam.machine_refill_countdown) + " s"));
  if (beam.machine_time) add("read", time(beam.machine_time) + " (the run's baseline)");
  for (const [name, value] of Object.entries(beam.monitor || {})) add(name, fmt(value) + " counts (last point)");
  for (const s of (beam.suspensions || []).slice(-3)) add("suspended", `${s.kind}: ${s.reason} (${fmt(s.duration_s || 0)} s, ${time(s.start)})`);
  if (!rows.length) rows.push(["", "no beam information recorded by the runs"]);
  $("beam").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    return [dt, dd];
  }));
}

// -- runs ------------------------------------------------------------------------------------------------
function showRuns(state) {
  $("runs-error").textContent = state.error || "";
  $("runs-error").className = "message" + (state.error ? " bad" : "");
  $("runs").tBodies[0].replaceChildren(...(state.runs || []).map((r) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "figure";
    button.addEventListener("click", () => showFigure(r));
    return row([r.scan_id, r.plan_name, r.sample, time(r.time), r.exit_status || "running", r.points, button],
      ["", "", "", "", "exit-" + (r.exit_status || ""), "", ""]);
  }));
}
async function showFigure(run) {
  const title = $("figure-title");
  title.textContent = `scan ${run.scan_id}: loading`;
  const response = await fetch(`/api/runs/${run.uid}/figure`, { headers: { Authorization: "ApiKey " + apiKey() } });
  if (response.status !== 200) {
    let detail = "";
    try { detail = (await response.json()).detail; } catch (e) { detail = "HTTP " + response.status; }
    title.textContent = `scan ${run.scan_id}: ${detail}`;
    return;
  }
  const message = decode(await response.arrayBuffer());
  const maps = message.header.type === "maps";
  $("figure-maps").hidden = !maps;
  $("figure-curve").hidden = maps;
  let info = "";
  if (maps) drawMaps($("figure-maps"), message);
  else info = showCurve(message, $("figure-curve"), false);
  title.textContent = `scan ${run.scan_id} ${run.plan_name}` + (info ? ": " + info : "");
  bs.figure = message.header;
}

takeKeyFromUrl();
connect();
