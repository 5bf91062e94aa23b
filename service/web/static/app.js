// RefineVAD live page: plain JS, no build step. Talks to the same API as any client, with the key typed in.
"use strict";

const KEY_STORAGE = "refinevad.apiKey";
const MAX_POINTS = 240; // snippets on the timeline
const MIN_SPAN = 40; // snippets the time axis spans at least
const DEFAULT_PERIOD_S = 1.6; // a snippet's media seconds before two snippets tell (16 frames at 10 fps)
const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  selected: null,
  socket: null,
  lastIndex: -1,
  points: new Map(), // snippet index -> {t, score, head, scene, status, gap, event}
  threshold: 0.5,
  sceneState: null, // the selected stream's scene state (null: scene models off)
  thumbs: new Map(), // stream id -> its thumbnail <img>, kept across refreshes
  categories: [], // the served model's category names, for "Confirm" with a kind
  kindChoice: new Map(), // event id -> the kind an operator picked, kept across refreshes
  eventsRequest: 0, // only the newest events request is shown (an older one may answer later)
};

// The timeline's series, drawn in this order: the fused score wide underneath, so the head's and the scene's
// thinner lines stay visible where they coincide with it (the fused score is mostly one of them).
const SERIES = [
  { key: "score", color: "#3b6fd8", width: 4 },
  { key: "head", color: "#e8710a", width: 1.5 },
  { key: "scene", color: "#9334e6", width: 1.5 },
];
const PLOT = { left: 40, right: 12, top: 10, bottom: 30 }; // room for the axes' labels
const TIME_STEPS = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
const VERDICTS = { false_alarm: "false alarm", confirmed: "confirmed" };

const $ = (sel) => document.querySelector(sel);

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h["X-API-Key"] = state.key;
  return h;
}

function showStatus(text) {
  $("#status").textContent = text || "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || `${response.status} ${response.statusText}`);
  return body;
}

// Media files load in <img> and <video>, which cannot send headers: the key goes in the query (kept out of the
// server's logs), and thumbnails get a cache-busting time so they show the newest frame.
function mediaUrl(path, fresh) {
  const params = new URLSearchParams();
  if (state.key) params.set("api_key", state.key);
  if (fresh) params.set("t", String(Date.now()));
  const query = params.toString();
  return query ? `${path}?${query}` : path;
}

function thumbnail(path, fresh, alt) {
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = alt;
  img.src = mediaUrl(path, fresh);
  // No frame yet (404): an empty box instead of a broken image.
  img.addEventListener("error", () => img.classList.add("missing"));
  return img;
}

// A camera's thumbnail: one <img> per stream, updated only once the next frame has loaded (no flicker).
function streamThumb(s) {
  const path = `/streams/${s.id}/snapshot.jpg`;
  let img = state.thumbs.get(s.id);
  if (!img) {
    img = thumbnail(path, true, `latest frame of ${s.name}`);
    state.thumbs.set(s.id, img);
    return img;
  }
  const next = new Image();
  next.onload = () => {
    img.src = next.src;
    img.classList.remove("missing");
  };
  next.src = mediaUrl(path, true);
  return img;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function button(text, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.className = cls;
  b.addEventListener("click", (ev) => {
    ev.stopPropagation(); // not a click on the row
    onClick();
  });
  return b;
}

// A camera's own scene model: learning (with progress), calibrated, or none yet; "unfamiliar" while the view is
// unlike the model's training footage and the camera has not calibrated its own normal to make up for it.
function sceneCell(s) {
  const td = document.createElement("td");
  const state = s.scene_state;
  td.dataset.sceneState = state || "off";
  if (!state) {
    td.textContent = "off";
    td.title = "scene models are off (REFINEVAD_SCENE_MODELS)";
    td.className = "scene scene-off";
    return td;
  }
  const unfamiliar = state !== "calibrated" && s.scene && s.scene.familiar === false;
  const learning = state === "learning" ? `learning ${Math.floor((s.scene_progress || 0) * 100)} %` : "";
  if (state === "calibrated") {
    td.textContent = "calibrated";
    td.title = "the camera knows its normal: its scene score says how unusual each snippet is here";
  } else if (unfamiliar) {
    td.textContent = learning ? `unfamiliar, ${learning}` : "unfamiliar";
    td.title = "unlike the model's training footage and not yet calibrated to this camera: scores are no evidence";
  } else {
    td.textContent = learning || "none";
    td.title = learning ? "learning this camera's normal from its footage" : "nothing learned yet";
  }
  td.className = `scene scene-${unfamiliar ? "unfamiliar" : state}`;
  return td;
}

async function refreshStreams() {
  let data;
  try {
    data = await api("/streams");
    showStatus("");
  } catch (err) {
    showStatus(`streams: ${err.message}`);
    return;
  }
  const body = $("#streams tbody");
  body.replaceChildren();
  const listed = new Set(data.items.map((s) => s.id));
  for (const id of state.thumbs.keys()) if (!listed.has(id)) state.thumbs.delete(id);
  for (const s of data.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    if (s.id === state.selected) tr.className = "selected";
    const camera = document.createElement("td");
    camera.append(streamThumb(s));
    tr.append(
      camera,
      cell(s.name),
      cell(s.state, `state state-${s.state}`),
      sceneCell(s),
      cell(`${s.fps_in.toFixed(1)} / ${s.fps_processed.toFixed(1)}`),
      cell(String(s.dropped_frames)),
      cell(s.last_error || ""),
    );
    if (s.id === state.selected) state.sceneState = s.scene_state;
    const remove = button("Remove", "remove", async () => {
      try {
        await api(`/streams/${s.id}`, { method: "DELETE" });
        if (state.selected === s.id) select(null);
        refreshStreams();
      } catch (err) {
        showStatus(err.message);
      }
    });
    const td = document.createElement("td");
    td.append(remove);
    if (s.scene_state) {
      const forget = button("Forget scene", "forget-scene", async () => {
        const question =
          `Forget what "${s.name}" learned about its scene (the camera was moved)? ` +
          "It learns its normal again from its footage, and reports no scene scores until then.";
        if (!window.confirm(question)) return;
        try {
          await api(`/streams/${s.id}/scene`, { method: "DELETE" });
          showStatus(`${s.name}: scene forgotten; learning it again`);
          refreshStreams();
        } catch (err) {
          showStatus(`forget scene: ${err.message}`);
        }
      });
      forget.disabled = s.scene_state === "none";
      td.append(forget);
    }
    tr.append(td);
    tr.addEventListener("click", () => select(s.id, s.name, s.events.enter_threshold));
    body.append(tr);
  }
  if (!state.selected && data.items.length) {
    const first = data.items[0];
    select(first.id, first.name, first.events.enter_threshold);
  }
}

function select(id, name, threshold) {
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
    state.socket = null;
  }
  state.selected = id;
  state.points.clear();
  state.lastIndex = -1;
  state.threshold = threshold ?? 0.5;
  state.sceneState = null;
  $("#selected-name").textContent = id ? `: ${name}` : "(select a stream)";
  $("#categories").replaceChildren();
  draw();
  if (id) {
    connect();
    refreshEvents();
  }
  for (const tr of document.querySelectorAll("#streams tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.id === id);
  }
}

function connect() {
  const id = state.selected;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams();
  if (state.key) params.set("api_key", state.key);
  // First connection: since=0 replays what the service kept, so the timeline is filled at once.
  params.set("since", String(Math.max(0, state.lastIndex)));
  const socket = new WebSocket(`${proto}://${location.host}/streams/${id}/live?${params}`);
  state.socket = socket;
  socket.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  socket.onclose = (ev) => {
    if (state.socket !== socket || state.selected !== id) return;
    showStatus(`live connection closed (${ev.code} ${ev.reason || ""}); reconnecting`);
    setTimeout(() => state.selected === id && connect(), 1500);
  };
}

function onMessage(msg) {
  if (msg.type === "snippet") {
    const previous = state.points.get(msg.index);
    state.points.set(msg.index, {
      t: msg.start_s,
      score: msg.score,
      head: msg.head_score ?? null,
      scene: msg.scene_score ?? null,
      status: msg.status,
      gap: msg.gap,
      event: (previous && previous.event) || (msg.events.length ? msg.events[0].type : null),
    });
    state.lastIndex = Math.max(state.lastIndex, msg.index);
    for (const i of state.points.keys()) if (i < state.lastIndex - MAX_POINTS) state.points.delete(i);
    if (msg.status === "provisional") showCategories(msg.categories);
    $("#live-info").textContent =
      `snippet ${msg.index} (${msg.start_s.toFixed(1)}-${msg.end_s.toFixed(1)} s) ` +
      `score ${msg.score.toFixed(3)} ${msg.status} (${scoreParts(msg)}), latency ${msg.latency_s.toFixed(2)} s, ` +
      (msg.dominant_category ? `likely ${msg.dominant_category}` : "no category") +
      whyHigh(msg) +
      (msg.degraded ? " (degraded: damaged or lost frames)" : "") +
      (msg.scene && !msg.scene.familiar
        ? ` (unfamiliar scene: unlike the model's training footage, distance ${msg.scene.distance.toPrecision(3)}` +
          ` > ${msg.scene.threshold.toPrecision(3)}; scores are no evidence)`
        : "");
    if (msg.events.length) refreshEvents();
    draw();
  } else if (msg.type === "state") {
    $("#live-info").textContent = `stream ${msg.state}${msg.last_error ? ": " + msg.last_error : ""}`;
  } else if (msg.type === "event") {
    refreshEvents();
  } else if (msg.type === "notice" && msg.code !== "replay_gap") {
    // replay_gap only says the oldest snippets are no longer kept: expected when opening the page.
    showStatus(msg.message);
  }
}

function scoreParts(msg) {
  const parts = [];
  if (msg.head_score != null) parts.push(`head ${msg.head_score.toFixed(3)}`);
  if (msg.scene_score != null) parts.push(`scene ${msg.scene_score.toFixed(3)}`);
  else if (state.sceneState) parts.push(`scene ${state.sceneState === "calibrated" ? "-" : "learning"}`);
  return parts.join(", ");
}

// Why the fused score is at or above the event threshold: the head sees one of its kinds, or the camera's own
// scene model finds the snippet unusual (no category: the service names none for it).
function whyHigh(msg) {
  if (msg.score < state.threshold) return "";
  const t = state.threshold;
  const sceneHigh = msg.scene_score != null && msg.scene_score >= t;
  if (!msg.dominant_category) return "; high because it is unusual for this camera (not a kind the model knows)";
  if (sceneHigh && msg.head_score != null && msg.head_score >= t)
    return `; high because the head sees ${msg.dominant_category} and it is unusual for this camera`;
  if (sceneHigh && (msg.head_score == null || msg.scene_score > msg.head_score))
    return "; high mostly because it is unusual for this camera";
  return `; high because the head sees ${msg.dominant_category}`;
}

function showCategories(categories) {
  const box = $("#categories");
  box.replaceChildren();
  const entries = Object.entries(categories).sort((a, b) => b[1] - a[1]);
  for (const [name, value] of entries) {
    const label = document.createElement("span");
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.style.width = `${(value * 100).toFixed(1)}%`;
    bar.append(fill);
    const pct = document.createElement("span");
    pct.textContent = `${(value * 100).toFixed(0)}%`;
    box.append(label, bar, pct);
  }
}

// The time step whose ticks fit about 8 times in `span` seconds.
function timeStep(span) {
  return TIME_STEPS.find((step) => span / step <= 8) || TIME_STEPS[TIME_STEPS.length - 1];
}

function draw() {
  const canvas = $("#timeline");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const left = PLOT.left;
  const right = w - PLOT.right;
  const top = PLOT.top;
  const bottom = h - PLOT.bottom;
  const y = (score) => bottom - score * (bottom - top);
  const indices = [...state.points.keys()].sort((a, b) => a - b);
  const held = indices.map((i) => state.points.get(i));
  // Media time runs along x, the newest snippet at the right: the snippets held, at least MIN_SPAN of them
  // (so the scale settles soon) and at most MAX_POINTS.
  const heldSpan = indices.length ? indices[indices.length - 1] - indices[0] : 0;
  const period =
    heldSpan > 0 ? (held[held.length - 1].t - held[0].t) / heldSpan || DEFAULT_PERIOD_S : DEFAULT_PERIOD_S;
  const span = Math.min(MAX_POINTS - 1, Math.max(MIN_SPAN - 1, heldSpan)) * period;
  // Until the stream has that much footage, the axis starts at 0 and fills from the left.
  const tStart = held.length ? Math.max(0, held[held.length - 1].t - span) : 0;
  const tEnd = tStart + span;
  const x = (t) => left + ((t - tStart) / (tEnd - tStart)) * (right - left);

  // The score axis: 0-1 with grid lines.
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#555";
  ctx.strokeStyle = "#e3e6ea";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const scoreTicks = [0, 0.25, 0.5, 0.75, 1];
  for (const v of scoreTicks) {
    ctx.beginPath();
    ctx.moveTo(left, y(v));
    ctx.lineTo(right, y(v));
    ctx.stroke();
    ctx.fillText(String(v), left - 5, y(v));
  }
  // The time axis: media seconds at round steps.
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const step = timeStep(tEnd - tStart);
  const timeTicks = [];
  for (let t = Math.ceil(Math.max(0, tStart) / step) * step; t <= tEnd + 1e-9; t += step) {
    const label = String(Number(t.toFixed(1)));
    timeTicks.push(label);
    ctx.strokeStyle = "#888";
    ctx.beginPath();
    ctx.moveTo(x(t), bottom);
    ctx.lineTo(x(t), bottom + 4);
    ctx.stroke();
    ctx.fillText(label, x(t), bottom + 5);
  }
  ctx.strokeStyle = "#888";
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(right, bottom);
  ctx.stroke();
  ctx.textAlign = "right";
  ctx.fillText("media time (s)", right, bottom + 17);

  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top - 4, right - left, bottom - top + 8);
  ctx.clip();
  ctx.strokeStyle = "#c5221f";
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(left, y(state.threshold));
  ctx.lineTo(right, y(state.threshold));
  ctx.stroke();
  ctx.setLineDash([]);
  for (const i of indices) {
    if (!state.points.get(i).gap) continue;
    // A gap marker: frames were dropped or the camera was away just before this snippet.
    ctx.strokeStyle = "#999";
    ctx.beginPath();
    ctx.moveTo(x(state.points.get(i).t) - 2, top);
    ctx.lineTo(x(state.points.get(i).t) - 2, bottom);
    ctx.stroke();
  }
  const counts = {};
  for (const series of SERIES) {
    // Each series is a line broken at gaps and where it has no value (the scene score while learning).
    ctx.strokeStyle = series.color;
    ctx.lineWidth = series.width;
    ctx.beginPath();
    let started = false;
    let count = 0;
    for (const p of held) {
      const v = p[series.key];
      if (v == null || p.gap) started = false;
      if (v == null) continue;
      count += 1;
      if (!started) ctx.moveTo(x(p.t), y(v));
      else ctx.lineTo(x(p.t), y(v));
      started = true;
    }
    ctx.stroke();
    counts[series.key] = count;
  }
  let finals = 0;
  ctx.lineWidth = 2;
  for (const p of held) {
    if (p.status === "final") finals += 1;
    ctx.fillStyle = p.status === "final" ? "#3b6fd8" : "#fff";
    ctx.strokeStyle = "#3b6fd8";
    ctx.beginPath();
    ctx.arc(x(p.t), y(p.score), 3, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }
  ctx.restore();
  for (const li of document.querySelectorAll("#timeline-legend li[data-series]")) {
    const key = li.dataset.series;
    li.classList.toggle("absent", key in counts && counts[key] === 0);
  }
  canvas.dataset.points = String(counts.score);
  canvas.dataset.headPoints = String(counts.head);
  canvas.dataset.scenePoints = String(counts.scene);
  canvas.dataset.lastIndex = String(state.lastIndex);
  canvas.dataset.finals = String(finals);
  canvas.dataset.timeTicks = timeTicks.join(",");
  canvas.dataset.scoreTicks = scoreTicks.join(",");
}

async function loadCategories() {
  if (state.categories.length) return;
  try {
    const ready = await api("/ready");
    state.categories = (ready.model && ready.model.category_names) || [];
  } catch {
    // Not ready yet (or refused): "Confirm" offers no kind until a later refresh.
  }
}

async function giveVerdict(e, verdict, category) {
  try {
    const body = { verdict };
    if (category) body.category = category;
    const given = await api(`/events/${e.id}/feedback`, { method: "POST", body: JSON.stringify(body) });
    showStatus(
      verdict === "false_alarm"
        ? `event ${e.id}: false alarm; the camera learned ${given.learned_snippets} of its snippets as normal`
        : `event ${e.id}: confirmed${category ? ` as ${category}` : ""}`,
    );
  } catch (err) {
    showStatus(`verdict on event ${e.id}: ${err.message}`);
  }
  refreshEvents(true);
}

// An event's verdict and the operator's buttons: none while it is still open (the API refuses: 409).
function verdictCell(e) {
  const td = document.createElement("td");
  td.className = "verdict";
  const shown = document.createElement("span");
  shown.className = "verdict-text";
  shown.textContent = e.verdict
    ? VERDICTS[e.verdict] + (e.verdict_category ? `: ${e.verdict_category}` : "")
    : "";
  const open = e.status === "open";
  const kind = document.createElement("select");
  kind.className = "verdict-kind";
  kind.title = "the kind, for Confirm";
  for (const name of ["", ...state.categories]) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name || "(kind)";
    kind.append(option);
  }
  const chosen = state.kindChoice.get(e.id) ?? e.verdict_category ?? e.dominant_category ?? "";
  kind.value = state.categories.includes(chosen) ? chosen : "";
  const falseAlarm = button("False alarm", "false-alarm", () => giveVerdict(e, "false_alarm", null));
  const confirmIt = button("Confirm", "confirm", () => giveVerdict(e, "confirmed", kind.value || null));
  const settle = () => {
    falseAlarm.disabled = open || e.verdict === "false_alarm";
    confirmIt.disabled = open || (e.verdict === "confirmed" && (e.verdict_category || "") === kind.value);
    kind.disabled = open;
  };
  kind.addEventListener("click", (ev) => ev.stopPropagation());
  kind.addEventListener("change", () => {
    state.kindChoice.set(e.id, kind.value);
    settle();
  });
  settle();
  if (open) td.title = "give a verdict once the event has ended";
  td.append(shown, falseAlarm, confirmIt);
  if (state.categories.length) td.append(kind);
  return td;
}

async function refreshEvents(force) {
  // A periodic refresh would close a kind list the operator has open: it waits for the next one.
  if (!force && document.activeElement && document.activeElement.matches("#events select")) return;
  const request = ++state.eventsRequest;
  let data;
  try {
    await loadCategories();
    data = await api("/events?source=stream&limit=20");
  } catch (err) {
    showStatus(`events: ${err.message}`);
    return;
  }
  if (request !== state.eventsRequest) return; // a newer request is on its way
  const body = $("#events tbody");
  body.replaceChildren();
  const time = (t) => (t ? new Date(t).toLocaleTimeString() : "");
  for (const e of data.items) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(e.id);
    const snap = document.createElement("td");
    // An open event's snapshot changes with each new peak: fetched fresh while open.
    if (e.snapshot_url) snap.append(thumbnail(e.snapshot_url, e.status === "open", `event ${e.id}`));
    const clip = document.createElement("td");
    if (e.clip_url) {
      clip.append(button("Play", "play", () => openClip(e)));
    } else {
      clip.textContent = e.clip_status || "";
    }
    tr.append(
      snap,
      cell(e.stream_name || e.source_id, "stream-name"),
      cell(time(e.started_at)),
      cell(time(e.ended_at)),
      cell(e.peak_score.toFixed(3), "peak"),
      // No category: only the camera's scene model found it unusual (the head names no kind for it).
      e.dominant_category
        ? cell(e.dominant_category, "category")
        : cell("unusual for this camera", "category unnamed"),
      cell(e.end_reason ? `${e.status} (${e.end_reason.replaceAll("_", " ")})` : e.status),
      clip,
      verdictCell(e),
    );
    body.append(tr);
  }
}

function openClip(e) {
  const player = $("#clip-player");
  $("#clip-title").textContent =
    `${e.stream_name || e.source_id}: ${e.dominant_category || "event"}, peak ${e.peak_score.toFixed(3)}`;
  player.src = mediaUrl(e.clip_url, false);
  $("#clip-panel").hidden = false;
  player.play().catch(() => {}); // autoplay may be refused; the controls are there
}

$("#clip-close").addEventListener("click", () => {
  const player = $("#clip-player");
  player.pause();
  player.removeAttribute("src");
  player.load();
  $("#clip-panel").hidden = true;
});

$("#api-key").value = state.key;
$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("#api-key").value.trim();
  localStorage.setItem(KEY_STORAGE, state.key);
  state.categories = [];
  select(null);
  refreshStreams();
  refreshEvents(true);
});
$("#add-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await api("/streams", {
      method: "POST",
      body: JSON.stringify({ url: $("#add-url").value, name: $("#add-name").value }),
    });
    $("#add-url").value = "";
    $("#add-name").value = "";
    refreshStreams();
  } catch (err) {
    showStatus(err.message);
  }
});

refreshStreams();
refreshEvents();
setInterval(refreshStreams, 2000);
setInterval(refreshEvents, 5000);
