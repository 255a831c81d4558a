// The session console page: one websocket to the console server (docs/console.md).
// Pods, circles and results arrive as JSON messages; commands go back the same way.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = {
  ws: null, page: null, role: "viewer", req: 0, retry: 500,
  pods: new Map(), circles: new Map(), watching: "",
  eeg: null, bands: null, circleSeries: new Map(),
};
const EEG_SECONDS = 5, BANDS_SECONDS = 120, CIRCLE_SECONDS = 120;
const CH_COLORS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3"];

// -- websocket ------------------------------------------------------------------
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  state.ws = ws;
  ws.onopen = () => { state.retry = 500; };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    const handler = HANDLERS[msg.t];
    if (handler) handler(msg);
  };
  ws.onclose = () => {
    setBroker(false, "console connection lost: reconnecting");
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 8000);
  };
}

function send(op, fields) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    addResult({ok: false, what: op, target: fields.pod || fields.circle || "", text: "not connected to the console",
      by: "", at: Date.now() / 1000});
    return null;
  }
  const req = ++state.req;
  state.ws.send(JSON.stringify(Object.assign({op, req}, fields)));
  return req;
}

const HANDLERS = {
  hello(m) {
    state.page = m.page; state.role = m.role;
    document.body.classList.toggle("operator", m.role === "operator");
    $("#who").textContent = `${m.user} · ${m.role}`;
    $("#logout").hidden = !m.logins && m.role !== "operator";
    $("#version").textContent = `hypnolum ${m.version}`;
    fillSelect($("#effect"), m.effects, "breathe");
    fillSelect($("#palette"), m.palettes, "warm");
    if (state.watching) send("watch", {pod: state.watching});
  },
  broker(m) { setBroker(m.connected, m.connected ? `broker ${m.where}` : `${m.where ? m.where + ": " : ""}${m.problem}`); },
  pod: updatePod,
  circle: updateCircle,
  result(m) { addResult(m); },
  error(m) { addResult({ok: false, what: "refused by the console", target: m.field || "", text: m.error, by: "", at: Date.now() / 1000, page: state.page}); },
  watching(m) { $("#eeg-info").textContent = m.id ? `watching ${m.id}` : ""; },
  eeg: onEeg,
  bands: onBands,
};

function setBroker(ok, text) {
  const b = $("#broker");
  b.textContent = text;
  b.className = "badge " + (ok ? "good" : "bad");
}

function fillSelect(select, values, chosen) {
  if (select.options.length) return;
  for (const v of values) {
    const o = el("option", "", v); o.value = v; if (v === chosen) o.selected = true; select.append(o);
  }
}

// -- pods -------------------------------------------------------------------------
function updatePod(p) {
  const known = state.pods.has(p.id);
  state.pods.set(p.id, p);
  let card = document.getElementById("pod-" + p.id);
  if (!card) {
    card = podCard(p.id);
    $("#pods").append(card);
    $("#no-pods").hidden = true;
  }
  card.dataset.link = p.link;
  card.querySelector(".link").textContent = p.link + (p.transport && p.transport !== "-" ? ` · ${p.transport}` : "");
  card.querySelector(".link").className = "badge link " + (p.link === "online" ? "good" : p.link === "refused" ? "bad" : "warn");
  card.querySelector(".reason").textContent = p.link === "online" ? "" : p.reason;
  drawStrip(card.querySelector(".strip"), p.leds);
  const sc = p.scene;
  const scene = card.querySelector(".scene");
  scene.textContent = "";
  if (sc) {
    const sw = el("span", "swatch"); if (sc.color) sw.style.backgroundColor = sc.color;
    scene.append(sw, `${sc.effect}${sc.brightness !== null ? " · " + Math.round(sc.brightness * 100) + " %" : ""}` +
      `${sc.palette ? " · " + sc.palette : ""}${sc.source ? " · from " + sc.source : ""}`);
  } else scene.textContent = "no scene reported";
  const safety = card.querySelector(".safety");
  safety.textContent = "";
  const words = p.safety.slice();
  if (p.limit_ma !== null && p.full_ma && p.limit_ma < p.full_ma) words.push(`current cap ${p.limit_ma}/${p.full_ma} mA`);
  for (const w of words) safety.append(el("span", "badge warn", w));
  if (!words.length) safety.append(el("span", "dim", "safety: normal"));
  const q = card.querySelector(".quality");
  q.textContent = "";
  for (const c of p.quality) {
    const b = el("span", "badge q-" + c.state, `${c.ch} ${c.state}`);
    b.title = c.rms_uv === null ? "no signal level" : `${c.rms_uv.toFixed(1)} µV rms`;
    q.append(b);
  }
  if (!p.quality.length) q.append(el("span", "dim", "EEG quality: not reported"));
  const facts = [];
  if (p.rtt_ms !== null) facts.push(`rtt ${p.rtt_ms.toFixed(1)} ms`);
  if (p.clock_us !== null) facts.push(`clock ±${Math.round(p.clock_us)} µs`);
  if (p.samples !== null) facts.push(`${p.samples} samples`);
  if (p.gaps) facts.push(`${p.gaps} gaps`);
  if (p.recording) facts.push(`rec ${p.recording}`);
  card.querySelector(".facts").textContent = facts.join(" · ");
  if (!known) { refreshTargets(); refreshEegChoices(); }
  $("#pod-count").textContent = `${[...state.pods.values()].filter((x) => x.link === "online").length} online of ${state.pods.size}`;
}

function podCard(id) {
  const card = el("article", "card pod");
  card.id = "pod-" + id;
  const head = el("div", "head");
  head.append(el("h3", "", id), el("span", "badge link"));
  const stop = el("button", "stop operator-only", "stop");
  stop.type = "button";
  stop.title = "fade this pod to its safe glow now and hold it there";
  stop.addEventListener("click", () => send("stop", {pod: id}));
  head.append(stop);
  const watch = el("button", "watch", "EEG");
  watch.type = "button";
  watch.title = "show this pod's EEG";
  watch.addEventListener("click", () => { $("#eeg-pod").value = id; watchPod(id); });
  head.append(watch);
  card.append(head, el("div", "reason dim"), el("div", "strip"), el("div", "scene"), el("div", "safety"),
    el("div", "quality"), el("div", "facts dim"));
  return card;
}

function drawStrip(strip, leds) {
  const rgb = leds ? leds.rgb : "";
  if (strip.dataset.rgb === rgb) return;
  strip.dataset.rgb = rgb;
  strip.textContent = "";
  if (!leds) { strip.append(el("span", "dim", "no LED colours reported")); return; }
  for (let i = 0; i < leds.segments; i++) {
    const seg = el("span", "seg");
    seg.style.backgroundColor = "#" + rgb.substr(6 * i, 6);
    strip.append(seg);
  }
  strip.title = `${leds.led_count ?? "?"} LEDs in ${leds.segments} segments`;
}

function refreshTargets() {
  const sel = $("#target"), current = sel.value;
  sel.textContent = "";
  for (const id of [...state.pods.keys()].sort()) { const o = el("option", "", id); o.value = "pod:" + id; sel.append(o); }
  for (const [name, c] of [...state.circles.entries()].sort()) {
    if (!c.defined) continue;
    const o = el("option", "", `circle ${name} (${c.pods.length} pods)`); o.value = "circle:" + name; sel.append(o);
  }
  if ([...sel.options].some((o) => o.value === current)) sel.value = current;
  targetChanged();
}

function target() {
  const v = $("#target").value || "";
  const i = v.indexOf(":");
  return v.slice(0, i) === "circle" ? {circle: v.slice(i + 1)} : {pod: v.slice(i + 1)};
}

function targetChanged() {
  document.body.classList.toggle("target-circle", "circle" in target());
}

// -- controls ---------------------------------------------------------------------
function sceneFromForm() {
  const hex = $("#color").value;
  return {
    effect: $("#effect").value,
    palette: $("#palette").value,
    color: [1, 3, 5].map((i) => parseInt(hex.substr(i, 2), 16)),
    brightness: Number($("#brightness").value) / 100,
    period_ms: Math.round(Number($("#period").value)),
    transition_ms: Math.round(Number($("#transition").value)),
  };
}

function setupControls() {
  $("#target").addEventListener("change", targetChanged);
  $("#brightness").addEventListener("input", () => { $("#brightness-out").textContent = $("#brightness").value + " %"; });
  $("#scene-form").addEventListener("submit", (ev) => { ev.preventDefault(); send("set", Object.assign(target(), {scene: sceneFromForm()})); });
  $("#timeline-start").addEventListener("click", () => send("timeline", {circle: target().circle, action: "start", scene: sceneFromForm()}));
  $("#timeline-stop").addEventListener("click", () => send("timeline", {circle: target().circle, action: "stop"}));
  $("#marker-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("#marker-text").value.trim();
    if (text) { send("marker", Object.assign(target(), {text})); $("#marker-text").value = ""; }
  });
  $("#eeg-pod").addEventListener("change", () => watchPod($("#eeg-pod").value));
  $("#eeg-scale").addEventListener("change", () => { if (state.eeg) state.eeg.dirty = true; });
}

function addResult(m) {
  const li = el("li", m.ok ? "ok" : "failed");
  li.dataset.ok = m.ok ? "1" : "0";
  if (m.page && m.page === state.page) li.classList.add("mine");
  const t = new Date((m.at || Date.now() / 1000) * 1000).toLocaleTimeString();
  li.append(el("span", "dim", t + " "), el("b", "", `${m.target} ${m.what}`), ` ${m.by ? "by " + m.by + ": " : ": "}`,
    el("span", "outcome", m.text));
  const list = $("#results");
  list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

// -- EEG --------------------------------------------------------------------------
function refreshEegChoices() {
  const sel = $("#eeg-pod"), current = sel.value;
  for (const id of [...state.pods.keys()].sort()) {
    if (![...sel.options].some((o) => o.value === id)) { const o = el("option", "", id); o.value = id; sel.append(o); }
  }
  sel.value = current;
}

function watchPod(id) {
  state.watching = id;
  state.eeg = null; state.bands = null;
  $("#eeg-chart").textContent = ""; $("#bands-chart").textContent = "";
  send("watch", {pod: id || null});
}

function chartWidth(node) { return Math.max(300, node.clientWidth || 500); }

function onEeg(m) {
  if (m.id !== state.watching) return;
  const ch = m.uv.length, n = ch ? m.uv[0].length : 0, rate = m.rate_hz || 250;
  if (!state.eeg || state.eeg.ch !== ch) state.eeg = newEeg(ch, rate);
  const E = state.eeg, t0 = (m.t_last || Date.now() / 1000) - (n - 1) / rate;
  for (let i = 0; i < n; i++) E.t.push(t0 + i / rate);
  for (let c = 0; c < ch; c++) for (const v of m.uv[c]) E.v[c].push(v);
  const keep = Math.round(EEG_SECONDS * rate);
  if (E.t.length > keep) { const cut = E.t.length - keep; E.t.splice(0, cut); for (const a of E.v) a.splice(0, cut); }
  E.dirty = true;
  $("#eeg-info").textContent = `${m.id} · ${ch} channels at ${rate} Hz${m.gap ? " · gap" : ""}`;
}

function newEeg(ch, rate) {
  const node = $("#eeg-chart");
  node.textContent = "";
  const series = [{}];
  for (let c = 0; c < ch; c++) series.push({label: `${c + 1}`, stroke: CH_COLORS[c % CH_COLORS.length], width: 1, points: {show: false}});
  const plot = new uPlot({
    width: chartWidth(node), height: 320, series, legend: {show: false}, cursor: {show: false},
    scales: {x: {time: true}, y: {auto: false, range: [-(ch + 0.5), 0.5]}},
    axes: [{stroke: "#aaa", grid: {stroke: "#333"}},
      {stroke: "#aaa", grid: {show: false}, splits: () => Array.from({length: ch}, (_, c) => -c),
        values: (u, s) => s.map((v) => `${1 - v}`)}],
  }, [[], ...Array.from({length: ch}, () => [])], node);
  return {ch, rate, t: [], v: Array.from({length: ch}, () => []), plot, dirty: false};
}

function drawEeg() {
  const E = state.eeg;
  if (!E || !E.dirty) return;
  E.dirty = false;
  const scale = Number($("#eeg-scale").value);
  const data = [E.t.slice()];
  for (let c = 0; c < E.ch; c++) {
    const a = E.v[c];
    let mean = 0; for (const v of a) mean += v; mean /= Math.max(1, a.length);
    data.push(a.map((v) => (v - mean) / (2 * scale) - c));
  }
  E.plot.setData(data);
}

function onBands(m) {
  if (m.id !== state.watching) return;
  if (!state.bands) state.bands = newBands(m.bands);
  const B = state.bands;
  B.t.push(m.t_host || Date.now() / 1000);
  m.bands.forEach((_, b) => {
    let s = 0; for (const row of m.powers) s += row[b];
    B.v[b].push(Math.max(1e-3, s / Math.max(1, m.powers.length)));
  });
  while (B.t.length && B.t[0] < B.t[B.t.length - 1] - BANDS_SECONDS) { B.t.shift(); for (const a of B.v) a.shift(); }
  B.dirty = true;
}

function newBands(names) {
  const node = $("#bands-chart");
  node.textContent = "";
  const colors = ["#888", "#4363d8", "#3cb44b", "#f58231", "#e6194b", "#911eb4"];
  const series = [{}].concat(names.map((n, i) => ({label: n, stroke: colors[i % colors.length], width: n === "alpha" ? 2.5 : 1.2, points: {show: false}})));
  const plot = new uPlot({
    width: chartWidth(node), height: 320, series,
    scales: {x: {time: true}, y: {distr: 3}},
    axes: [{stroke: "#aaa", grid: {stroke: "#333"}}, {stroke: "#aaa", grid: {stroke: "#333"}, size: 70}],
  }, [[], ...names.map(() => [])], node);
  return {names, t: [], v: names.map(() => []), plot, dirty: false};
}

function drawBands() {
  const B = state.bands;
  if (!B || !B.dirty) return;
  B.dirty = false;
  B.plot.setData([B.t.slice(), ...B.v.map((a) => a.slice())]);
}

// -- circles ----------------------------------------------------------------------
function updateCircle(c) {
  const before = state.circles.get(c.name);
  state.circles.set(c.name, c);
  let card = document.getElementById("circle-" + c.name);
  if (!card) {
    card = el("article", "card circle");
    card.id = "circle-" + c.name;
    card.append(el("h3", "", `circle ${c.name}`), el("div", "facts"), el("div", "chart"));
    $("#circles").append(card);
    $("#no-circles").hidden = true;
  }
  const facts = [
    c.defined ? `${c.pods.join(", ")} · drive ${c.drive}` : "no definition",
    c.timeline ? `timeline set (${c.timeline.events} events)` : "no timeline",
    c.value === null ? "group value -" : `group value ${(c.value * 100).toFixed(1)} %`,
    c.sync_error_us === null ? "sync error -" : `sync error ≤ ${c.sync_error_us.toFixed(0)} µs`,
  ];
  if (c.plv !== null) facts.push(`PLV ${c.plv.toFixed(2)}`);
  card.querySelector(".facts").textContent = facts.join(" · ");
  let s = state.circleSeries.get(c.name);
  if (!s) {
    const node = card.querySelector(".chart");
    const plot = new uPlot({
      width: chartWidth(node), height: 160,
      series: [{}, {label: "group value %", stroke: "#3cb44b", scale: "%", points: {show: false}},
        {label: "sync error µs", stroke: "#f58231", scale: "us", points: {show: false}}],
      scales: {x: {time: true}, "%": {auto: false, range: [0, 100]}},
      axes: [{stroke: "#aaa", grid: {stroke: "#333"}}, {scale: "%", stroke: "#3cb44b", grid: {stroke: "#333"}},
        {scale: "us", side: 1, stroke: "#f58231", grid: {show: false}}],
    }, [[], [], []], node);
    s = {t: [], value: [], sync: [], plot, dirty: false};
    state.circleSeries.set(c.name, s);
  }
  s.t.push(c.at); s.value.push(c.value === null ? null : c.value * 100); s.sync.push(c.sync_error_us);
  while (s.t.length && s.t[0] < c.at - CIRCLE_SECONDS) { s.t.shift(); s.value.shift(); s.sync.shift(); }
  s.dirty = true;
  if (!before || before.defined !== c.defined || before.pods.join() !== c.pods.join()) refreshTargets();
}

function drawCircles() {
  for (const s of state.circleSeries.values()) {
    if (s.dirty) { s.dirty = false; s.plot.setData([s.t.slice(), s.value.slice(), s.sync.slice()]); }
  }
}

function frame() {
  drawEeg(); drawBands(); drawCircles();
  requestAnimationFrame(frame);
}

window.addEventListener("error", (ev) => { $("#page-errors").textContent = `page error: ${ev.message}`; });
document.addEventListener("DOMContentLoaded", () => { setupControls(); connect(); requestAnimationFrame(frame); });
