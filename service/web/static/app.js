// RefineVAD live page: plain JS, no build step. Talks to the same API as any client, with the key typed in.
"use strict";

const KEY_STORAGE = "refinevad.apiKey";
const MAX_POINTS = 240; // snippets on the timeline
const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  selected: null,
  socket: null,
  lastIndex: -1,
  points: new Map(), // snippet index -> {score, status, gap, event}
  threshold: 0.5,
  thumbs: new Map(), // stream id -> its thumbnail <img>, kept across refreshes
};

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
      cell(`${s.fps_in.toFixed(1)} / ${s.fps_processed.toFixed(1)}`),
      cell(String(s.dropped_frames)),
      cell(s.last_error || ""),
    );
    const remove = document.createElement("button");
    remove.textContent = "Remove";
    remove.addEventListener("click", async (ev) => {
      ev.stopPropagation();
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
      score: msg.score,
      status: msg.status,
      gap: msg.gap,
      event: (previous && previous.event) || (msg.events.length ? msg.events[0].type : null),
    });
    state.lastIndex = Math.max(state.lastIndex, msg.index);
    for (const i of state.points.keys()) if (i < state.lastIndex - MAX_POINTS) state.points.delete(i);
    if (msg.status === "provisional") showCategories(msg.categories);
    $("#live-info").textContent =
      `snippet ${msg.index} (${msg.start_s.toFixed(1)}-${msg.end_s.toFixed(1)} s) ` +
      `score ${msg.score.toFixed(3)} ${msg.status}, latency ${msg.latency_s.toFixed(2)} s, ` +
      `likely ${msg.dominant_category}` +
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

function draw() {
  const canvas = $("#timeline");
  const ctx = canvas.getContext("2d");
  const w = canvas.width;
  const h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const y = (score) => h - 10 - score * (h - 20);
  ctx.strokeStyle = "#c5221f";
  ctx.setLineDash([4, 4]);
  ctx.beginPath();
  ctx.moveTo(0, y(state.threshold));
  ctx.lineTo(w, y(state.threshold));
  ctx.stroke();
  ctx.setLineDash([]);
  const indices = [...state.points.keys()].sort((a, b) => a - b);
  const first = state.lastIndex - MAX_POINTS + 1;
  const x = (i) => ((i - first) / (MAX_POINTS - 1)) * (w - 10) + 5;
  let finals = 0;
  ctx.strokeStyle = "#3b6fd8";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let started = false;
  for (const i of indices) {
    const p = state.points.get(i);
    if (p.status === "final") finals += 1;
    if (p.gap) {
      // A gap marker: frames were dropped or the camera was away just before this snippet.
      ctx.save();
      ctx.strokeStyle = "#999";
      ctx.beginPath();
      ctx.moveTo(x(i) - 2, 0);
      ctx.lineTo(x(i) - 2, h);
      ctx.stroke();
      ctx.restore();
      started = false;
    }
    if (!started) {
      ctx.moveTo(x(i), y(p.score));
      started = true;
    } else {
      ctx.lineTo(x(i), y(p.score));
    }
  }
  ctx.stroke();
  for (const i of indices) {
    const p = state.points.get(i);
    ctx.fillStyle = p.status === "final" ? "#3b6fd8" : "#fff";
    ctx.strokeStyle = "#3b6fd8";
    ctx.beginPath();
    ctx.arc(x(i), y(p.score), 3, 0, 2 * Math.PI);
    ctx.fill();
    ctx.stroke();
  }
  canvas.dataset.points = String(indices.length);
  canvas.dataset.lastIndex = String(state.lastIndex);
  canvas.dataset.finals = String(finals);
}

async function refreshEvents() {
  let data;
  try {
    data = await api("/events?source=stream&limit=20");
  } catch (err) {
    showStatus(`events: ${err.message}`);
    return;
  }
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
      const play = document.createElement("button");
      play.type = "button";
      play.className = "play";
      play.textContent = "Play";
      play.addEventListener("click", (ev) => {
        ev.stopPropagation();
        openClip(e);
      });
      clip.append(play);
    } else {
      clip.textContent = e.clip_status || "";
    }
    tr.append(
      snap,
      cell(e.stream_name || e.source_id, "stream-name"),
      cell(time(e.started_at)),
      cell(time(e.ended_at)),
      cell(e.peak_score.toFixed(3), "peak"),
      cell(e.dominant_category || "", "category"),
      cell(e.end_reason ? `${e.status} (${e.end_reason.replaceAll("_", " ")})` : e.status),
      clip,
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
  select(null);
  refreshStreams();
  refreshEvents();
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
