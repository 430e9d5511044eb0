// vidmem's editor page: libraries, the player with its timeline and transcript, search that jumps
// the player to the moment (and to the other times the memory saw it). Plain DOM, no build step;
// every text from the API goes in as text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { library: null, video: null, timeline: null, cues: [], activeCue: -1, activeShot: -2 };

function hms(seconds) {
  const s = Math.max(0, Math.floor(seconds + 1e-6));
  const pad = (n) => String(n).padStart(2, "0");
  return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 1500);
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  toast(`copied ${text}`);
}

// A timestamp the user can click (seek) and copy: HH:MM:SS, with the deep link as its title.
function stamp(videoId, seconds, onSeek) {
  const b = el("button", { class: "ts", title: `copy ${hms(seconds)} · ${location.origin}/videos/${videoId}?t=${seconds.toFixed(2)}` }, hms(seconds));
  b.addEventListener("click", (e) => {
    e.stopPropagation();
    copy(hms(seconds));
    if (onSeek) onSeek();
  });
  return b;
}

// Tags (ImageNet labels, face and people counts) are candidates the models found, below any measured
// precision: muted chips apart from the caption, each saying so in its title, never caption prose.
// A scene's or chapter's tags are its shots' (the API merges them).
const CANDIDATE = "candidate tags (not verified)";

function tagText(t) {
  return t.kind === "label" || t.count <= 1 ? t.name : `${t.name} ×${t.count}`;
}

function tagChips(tags) {
  if (!tags || !tags.length) return "";
  return el("span", { class: "tags", title: CANDIDATE }, ...tags.map((t) => el("span", {
    class: "tag",
    dataset: { kind: t.kind },
    title: `${CANDIDATE}: ${t.kind} ${t.name}, score ${t.score.toFixed(2)}${t.shots > 1 ? `, in ${t.shots} shots` : ""}`,
  }, tagText(t))));
}

async function api(path, options = {}) {
  const res = await fetch(path, { credentials: "same-origin", ...options });
  if (res.status === 401) {
    showLogin();
    throw new Error("unauthorized");
  }
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch { /* not JSON */ }
    throw new Error(message);
  }
  return res.status === 204 ? null : res.json();
}

function show(view) {
  for (const id of ["login", "library-view", "video-view"]) $(id).hidden = id !== view;
}

function showLogin() {
  show("login");
  $("login-key").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const res = await fetch("/v1/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: $("login-key").value.trim() }),
  });
  if (!res.ok) { $("login-error").textContent = "That key was not accepted."; return; }
  $("login-key").value = "";
  route();
});

// Logging out revokes the session in the catalog (the cookie holds its token, never the key).
$("logout").addEventListener("click", async () => {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  $("who").textContent = "";
  $("logout").hidden = true;
  showLogin();
});

// --- library view ---------------------------------------------------------------------------------

async function openLibrary(name) {
  show("library-view");
  $("search-scope").value = "library";
  const libs = await api("/v1/libraries");
  state.library = name || (libs[0] && libs[0].name) || null;
  $("libraries").replaceChildren(...libs.map((l) => el("li", {},
    el("a", { href: `/?library=${encodeURIComponent(l.name)}`, class: l.name === state.library ? "current" : "" }, `${l.name} (${l.videos})`))));
  $("library-title").textContent = state.library || "No library yet";
  if (!state.library) return;
  const videos = await api(`/v1/libraries/${encodeURIComponent(state.library)}/videos`);
  $("videos").replaceChildren(...videos.map((v) => el("li", {},
    el("a", { href: v.page },
      v.kind === "video" && v.status === "ready" ? el("img", { src: `/v1/videos/${v.id}/thumbnail?t=${Math.min(10, v.duration / 3).toFixed(1)}`, alt: "", loading: "lazy" }) : "",
      el("div", { class: "meta" }, el("div", {}, v.title), el("div", { class: "status" }, `${hms(v.duration)} · ${v.status}`))))));
  pollJobs();
}

async function pollJobs() {
  if (!state.library || $("library-view").hidden) return;
  const jobs = await api(`/v1/jobs?library=${encodeURIComponent(state.library)}&limit=10`);
  const open = jobs.filter((j) => j.status === "queued" || j.status === "running" || j.status === "failed");
  $("jobs").replaceChildren(...open.map((j) => el("li", { class: "status" },
    `${j.title}: ${j.status}${j.stage ? ` · ${j.stage} ${(100 * j.progress).toFixed(0)}%` : ""}${j.error ? ` · ${j.error}` : ""}`)));
  if (jobs.some((j) => j.status === "queued" || j.status === "running")) {
    clearTimeout(pollJobs.timer);
    pollJobs.timer = setTimeout(async () => { await pollJobs(); }, 2000);
  }
}

$("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("upload-file").files[0];
  if (!file || !state.library) return;
  $("upload-status").textContent = `uploading ${file.name}…`;
  try {
    await api(`/v1/libraries/${encodeURIComponent(state.library)}/videos?filename=${encodeURIComponent(file.name)}`, {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
    $("upload-status").textContent = `${file.name} queued`;
    pollJobs();
  } catch (err) {
    $("upload-status").textContent = err.message;
  }
});

// --- video view -----------------------------------------------------------------------------------

async function openVideo(id, t) {
  show("video-view");
  $("search-scope").value = "video";
  const tl = await api(`/v1/videos/${id}/timeline`);
  state.video = tl.video;
  state.timeline = tl;
  state.library = tl.video.library;
  document.title = `${tl.video.title} · vidmem`;
  $("video-title").textContent = tl.video.title;
  $("export-vtt").href = `/v1/videos/${id}/export?format=vtt`;
  $("export-json").href = `/v1/videos/${id}/export?format=json`;
  const player = $("player");
  player.src = `/v1/videos/${id}/media`;
  if (tl.video.kind === "transcript") player.hidden = true;
  if (t > 0) {
    player.addEventListener("loadedmetadata", () => { player.currentTime = t; }, { once: true });
  }
  drawTimeline(tl);
  state.activeShot = -2;
  showShot(t);
  state.cues = tl.transcript;
  $("transcript").replaceChildren(...tl.transcript.map((c, i) => el("li", { dataset: { i }, onclick: () => seek(c.start) },
    stamp(id, c.start, () => seek(c.start)), " ", c.text)));
  $("chapters").replaceChildren(...tl.chapters.map((c, i) => el("li", { onclick: () => seek(c.start) },
    stamp(id, c.start, () => seek(c.start)), " ", c.caption || `Chapter ${i + 1}`, tagChips(c.tags))));
}

// A shot the library's memory does not keep (skipped, or its slot evicted: a folded shot is kept, in
// the slot it folded into) is drawn muted; `retained` is null for a shot never gated.
const NOT_KEPT = "not kept by the memory (skipped, or its slot evicted)";

function memoryNote(g) {
  if (g.retained === false) return ` · ${NOT_KEPT}`;
  return g.salience != null ? ` · memory salience ${g.salience.toFixed(2)}` : "";
}

// The shot under the playhead: its span, caption and candidate tags (and whether the memory
// keeps it), below the timeline.
function showShot(t) {
  const shots = (state.timeline && state.timeline.shots) || [];
  let i = shots.findIndex((g) => g.start <= t && t < g.end);
  if (i < 0 && shots.length && t >= shots[shots.length - 1].start) i = shots.length - 1;
  if (i === state.activeShot) return;
  state.activeShot = i;
  const g = shots[i];
  $("shot-info").hidden = !g;
  $("shot-info").replaceChildren(...(g ? [
    el("span", { class: "status" }, `shot ${i + 1} · ${hms(g.start)} – ${hms(g.end)}`),
    g.caption ? el("span", {}, g.caption) : "",
    tagChips(g.tags),
    g.retained === false ? el("span", { class: "status not-kept" }, NOT_KEPT) : "",
  ] : []));
}

function drawTimeline(tl) {
  const total = tl.video.duration || 1;
  for (const lane of document.querySelectorAll("#timeline .lane")) {
    const items = tl[lane.dataset.level] || [];
    const name = lane.querySelector(".lane-name");
    lane.replaceChildren(name, ...items.map((g, i) => el("div", {
      class: g.retained === false ? "seg not-kept" : "seg",
      style: `left:${(100 * g.start / total).toFixed(4)}%;width:${(100 * (g.end - g.start) / total).toFixed(4)}%`,
      title: `${hms(g.start)} – ${hms(g.end)}${g.caption ? ` · ${g.caption}` : ""}${
        g.tags && g.tags.length ? ` · ${CANDIDATE}: ${g.tags.map(tagText).join(", ")}` : ""}${memoryNote(g)}`,
      dataset: { start: g.start },
      onclick: () => seek(g.start),
    }, lane.dataset.level === "chapters" ? (g.caption || `${i + 1}`) : "")));
  }
  // keyframe thumbnails along the shot row (a long video's thousands of shots are left plain)
  const shots = document.querySelectorAll('#timeline .lane[data-level="shots"] .seg');
  if (tl.video.kind === "video" && shots.length <= 400) {
    shots.forEach((seg, i) => {
      const g = tl.shots[i];
      const t = g.keyframe_time != null ? g.keyframe_time : g.start;
      seg.style.backgroundImage = `url("/v1/videos/${tl.video.id}/thumbnail?t=${t.toFixed(2)}&width=96")`;
      seg.classList.add("thumb");
    });
  }
  state.markIn = state.markOut = null;
  drawMarks();
}

// --- editing: mark in and out on the timeline, render an insert or edit, follow it, play the preview

const POINT_OPS = new Set(["title", "freeze", "extend", "generate"]);

function drawMarks() {
  const total = (state.video && state.video.duration) || 1;
  const marks = $("marks");
  const a = state.markIn, b = state.markOut;
  $("in-at").textContent = a != null ? hms(a) : "–";
  $("out-at").textContent = b != null ? hms(b) : "–";
  marks.hidden = a == null;
  if (a == null) return;
  const end = b != null && b > a ? b : a;
  const lane = document.querySelector("#timeline .lane");  // marks sit over the lanes, as the playhead
  marks.style.left = `${(lane.offsetLeft + lane.offsetWidth * Math.min(1, a / total)).toFixed(1)}px`;
  marks.style.width = `${Math.max(2, lane.offsetWidth * (end - a) / total).toFixed(1)}px`;
}

$("mark-in").addEventListener("click", () => { state.markIn = $("player").currentTime; drawMarks(); });
$("mark-out").addEventListener("click", () => { state.markOut = $("player").currentTime; drawMarks(); });

async function followEdit(id) {
  const job = await api(`/v1/jobs/${id}`);
  const status = $("edit-status");
  if (job.status === "queued" || job.status === "running") {
    status.textContent = `${job.status}${job.status === "running" ? ` ${(100 * job.progress).toFixed(0)}%` : ""}`;
    followEdit.timer = setTimeout(() => followEdit(id), 1000);
    return;
  }
  if (job.status !== "done") {
    status.textContent = `${job.status}${job.error ? `: ${job.error}` : ""}`;
    return;
  }
  const r = job.result;
  status.textContent = `done: ${r.plan.operation} at ${r.timeline.insert_at_hms}, ` +
    `${r.plan.frames} frames; the cut is ${hms(r.timeline.seconds)}${r.plan.notes.length ? ` (${r.plan.notes.join("; ")})` : ""}`;
  $("edit-result").hidden = false;
  $("edit-preview").src = `/v1/jobs/${id}/files/preview.mp4`;
  const files = [["edit.otio", "OpenTimelineIO"], ["edit.edl", "EDL (CMX 3600)"], ["edit.xml", "FCP XML"]];
  $("edit-files").replaceChildren(...files.map(([name, label]) =>
    el("a", { href: `/v1/jobs/${id}/files/${name}`, download: name }, label)));
}

$("edit-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const op = $("edit-op").value;
  const status = $("edit-status");
  if (state.markIn == null) { status.textContent = "mark an in-point first"; return; }
  const point = POINT_OPS.has(op);
  if (!point && !(state.markOut > state.markIn)) { status.textContent = `${op} needs an out-point after the in-point`; return; }
  const words = $("edit-text").value.trim();
  const body = {
    video_id: state.video.id,
    operation: op,
    anchor: point ? state.markIn : [state.markIn, state.markOut],
    backend: $("edit-backend").value,
  };
  if (op === "title") body.text = words; else if (words) body.prompt = words;
  clearTimeout(followEdit.timer);
  $("edit-result").hidden = true;
  try {
    const job = await api("/v1/edits", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    status.textContent = "queued";
    followEdit(job.id);
  } catch (err) {
    status.textContent = err.message;
  }
});

function seek(seconds) {
  const player = $("player");
  player.currentTime = seconds;
  player.play().catch(() => { /* autoplay may be refused; the position is set */ });
  history.replaceState(null, "", `/videos/${state.video.id}?t=${seconds.toFixed(2)}`);
}

$("player").addEventListener("timeupdate", () => {
  const player = $("player");
  const t = player.currentTime;
  $("now-copy").textContent = hms(t);
  const total = (state.video && state.video.duration) || player.duration || 1;
  const lane = document.querySelector("#timeline .lane");
  $("playhead").style.left = `${(lane.offsetWidth * Math.min(1, t / total)).toFixed(1)}px`;
  showShot(t);
  let i = state.cues.findIndex((c) => c.start <= t && t < c.end);
  if (i < 0) i = state.cues.findLastIndex((c) => c.start <= t);
  if (i !== state.activeCue) {
    const items = $("transcript").children;
    if (items[state.activeCue]) items[state.activeCue].classList.remove("active");
    if (items[i]) {
      items[i].classList.add("active");
      items[i].scrollIntoView({ block: "nearest" });
    }
    state.activeCue = i;
  }
});

$("now-copy").addEventListener("click", () => copy(hms($("player").currentTime)));
$("link-copy").addEventListener("click", () => {
  if (state.video) copy(`${location.origin}/videos/${state.video.id}?t=${$("player").currentTime.toFixed(2)}`);
});

// --- search and ask -------------------------------------------------------------------------------

// The other times the memory saw a moment (a line said again, a shot seen again: folded into one
// slot): each the API's deep link, which seeks the player in this video or opens the other one.
function alsoAt(places) {
  if (!places || !places.length) return "";
  const inVideo = state.video && !$("video-view").hidden;
  const links = places.map((o) => {
    const here = inVideo && o.video_id === state.video.id;
    return el("a", {
      class: here ? "also-at" : "also-at elsewhere",
      href: o.link,
      title: here ? `seek to ${o.timestamp}` : `open video ${o.video_id} at ${o.timestamp}`,
      dataset: { start: o.start, video: o.video_id },
      onclick: (e) => {
        e.stopPropagation();
        if (here) { e.preventDefault(); seek(o.start); }
      },
    }, o.timestamp);
  });
  return el("div", { class: "also", title: "the memory folded these into the same slot" },
    "also at ", ...links.flatMap((a, i) => (i ? [", ", a] : [a])));
}

function hitList(moments, target) {
  const inVideo = state.video && !$("video-view").hidden;
  target.replaceChildren(...moments.map((m) => el("div", {
    class: "hit",
    dataset: { start: m.start, video: m.video_id },
    onclick: () => {
      if (inVideo && m.video_id === state.video.id) seek(m.start);
      else location.href = m.link;
    },
  }, stamp(m.video_id, m.start), "–", stamp(m.video_id, m.end), el("span", { class: "kind" }, m.kind), el("div", {}, m.text),
  alsoAt(m.also))));
  if (!moments.length) target.replaceChildren(el("p", { class: "status" }, "Nothing found."));
}

function scopeParams() {
  const p = new URLSearchParams();
  if ($("search-scope").value === "video" && state.video && !$("video-view").hidden) p.set("video", state.video.id);
  else if (state.library) p.set("library", state.library);
  return p;
}

$("search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = $("search-input").value.trim();
  if (!q) return;
  const p = scopeParams();
  p.set("q", q);
  p.set("top", "10");
  p.set("refine", "true");
  const target = $("video-view").hidden ? $("library-hits") : $("hits");
  try {
    const res = await api(`/v1/search?${p}`);
    hitList(res.moments, target);
  } catch (err) {
    target.replaceChildren(el("p", { class: "error" }, err.message));
  }
});

// what was read before answering, and why reading stopped (the exit gate)
function readingLine(a) {
  const why = { gate: "the exit gate judged it enough", "all read": "every candidate read", off: "the gate was off" }[a.exit.reason] || a.exit.reason;
  return `read ${a.exit.after} of ${a.exit.of} pieces of evidence (${a.tokens} tokens): ${why}`;
}

function readingTitle(a) {
  return a.read.map((r) => `${r.role} ${r.timestamp} · ${r.tokens} tokens${r.stop != null ? ` · stop ${r.stop.toFixed(2)}` : ""}`).join("\n");
}

$("ask-button").addEventListener("click", async () => {
  const q = $("search-input").value.trim();
  if (!q) return;
  const p = scopeParams();
  // fallback: the page prefers an answer marked as the extractive one to none when the LLM is down
  const body = { question: q, video: p.get("video") || null, library: p.get("video") ? null : p.get("library"), fallback: true };
  const box = $("video-view").hidden ? $("library-hits") : $("answer");
  box.hidden = false;
  box.replaceChildren(el("p", { class: "status" }, "Thinking…"));
  try {
    const a = await api("/v1/ask", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const fellBack = a.fallback ? [el("p", { class: "fallback", role: "alert" },
      `Fallback: ${a.fallback.from} did not answer (${a.fallback.reason}); this is the ${a.engine} answer.`)] : [];
    box.replaceChildren(...fellBack, el("p", {}, a.answer), ...a.citations.map((c) => el("div", { class: "hit", onclick: () => {
      if (state.video && c.video_id === state.video.id && !$("video-view").hidden) seek(c.start); else location.href = c.link;
    } }, stamp(c.video_id, c.start), "–", stamp(c.video_id, c.end))), el("p", { class: "status" }, `engine ${a.engine}${a.note ? ` · ${a.note}` : ""}`),
      ...(a.exit ? [el("p", { class: "status reading", title: readingTitle(a) }, readingLine(a))] : []));
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, err.message));
  }
});

// --- routing --------------------------------------------------------------------------------------

async function route() {
  try {
    const me = await api("/v1/me");
    $("who").textContent = me.admin ? `${me.name} (admin)` : `${me.name} · ${me.library} (${me.role})`;
    $("logout").hidden = false;
  } catch {
    return;
  }
  const url = new URL(location.href);
  const m = url.pathname.match(/^\/videos\/([A-Za-z0-9]+)$/);
  try {
    if (m) await openVideo(m[1], parseFloat(url.searchParams.get("t") || "0") || 0);
    else await openLibrary(url.searchParams.get("library"));
  } catch (err) {
    if (err.message !== "unauthorized") toast(err.message);
  }
}

route();
