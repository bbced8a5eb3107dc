// The example's page: submit a generation, then follow every task by its id.
//
// Each task is a card fed by the server-sent events of GET /videos/{id}/events: "progress"
// events, then one "done" (a final status) or "error" (the service could not follow it).
// Task ids live in localStorage, so a reload re-attaches every card by id, the way the
// service re-attaches to tasks. No build step, no framework.
"use strict";

const STORE_KEY = "kling-example.tasks";
// Browsers open about 6 HTTP/1.1 connections per host; each stream holds one. Keep a few
// free for submitting, and let further cards wait for a slot.
const MAX_STREAMS = 4;
const MAX_BACKOFF = 30; // seconds between attempts to re-attach after a failure, at most
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const STATUS_WORDS = {
  pending: "Queued",
  processing: "Generating",
  completed: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

const form = document.getElementById("submit-form");
const formError = document.getElementById("form-error");
const list = document.getElementById("tasks");
const noTasks = document.getElementById("no-tasks");
const template = document.getElementById("card-template");
const shotList = document.getElementById("shot-list");
const shotTemplate = document.getElementById("shot-template");
const addShot = document.getElementById("add-shot");
const MAX_SHOTS = 6; // kling-v3 takes 1 to 6 shots

const cards = new Map(); // task id -> its card's state (see addCard)
const waiting = []; // ids of cards waiting for a free stream slot
let streaming = 0;

// -- remembering tasks across reloads --------------------------------------------------

function loadEntries() {
  try {
    const entries = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
    return Array.isArray(entries) ? entries.filter((e) => e && typeof e.id === "string") : [];
  } catch {
    return [];
  }
}

function saveEntries() {
  const entries = [...list.children].map((el) => cards.get(el.dataset.taskId).entry);
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(entries));
  } catch {
    // storage full or disabled: the cards still work until the page is closed
  }
}

// -- words -------------------------------------------------------------------------------

function inWords(seconds) {
  if (seconds < 1.5) return "a second";
  if (seconds < 59.5) return `${Math.round(seconds)} seconds`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return minutes === 1 ? "a minute" : `${minutes} minutes`;
  const hours = Math.round(seconds / 3600);
  return hours === 1 ? "an hour" : `${hours} hours`;
}

// The time left: from the progress rate once two readings show it moving (the server's
// estimate can be off, and time in the queue says nothing), else from the estimate.
function etaWords(card, snapshot) {
  const progress = Number(snapshot.progress) || 0;
  const now = Date.now();
  let left = null;
  if (progress > 0 && progress < 100) {
    const first = card.firstReading;
    if (!first) card.firstReading = { progress, at: now };
    else if (progress > first.progress) {
      left = (((now - first.at) / 1000) * (100 - progress)) / (progress - first.progress);
    }
  }
  const estimate = snapshot.estimated_time;
  if (left === null) {
    if (typeof estimate !== "number" || !(estimate > 0)) return "";
    if (progress > 0) left = (estimate * (100 - progress)) / 100;
    else if (card.entry.submitted) left = estimate - (now - card.entry.submitted) / 1000;
    else left = estimate;
  }
  return left > 0.5 ? `about ${inWords(left)} left` : "should finish any moment";
}

// A readable message from any error body the service sends: FastAPI's 422 `detail` list
// (field and rule) or the service's own {"error", "message"}.
function messageOf(status, body) {
  if (Array.isArray(body?.detail)) {
    return body.detail
      .map((item) => {
        const field = (item.loc || []).filter((part) => part !== "body").join(".");
        return field ? `${field}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  if (typeof body?.message === "string") return body.message;
  if (typeof body?.detail === "string") return body.detail;
  return `the service answered HTTP ${status}`;
}

// -- cards -------------------------------------------------------------------------------

// What a card is called: its prompt, else its first shot's, else its id.
function titleOf(entry) {
  return entry.prompt || entry.multi_prompt?.[0]?.prompt || entry.id;
}

function addCard(entry, atTop) {
  const el = template.content.firstElementChild.cloneNode(true);
  const title = titleOf(entry);
  el.dataset.taskId = entry.id;
  el.querySelector(".prompt").textContent = title;
  const shots = entry.multi_prompt?.length;
  const seconds = shots
    ? entry.multi_prompt.reduce((sum, shot) => sum + shot.duration, 0)
    : entry.duration;
  const meta = [
    entry.mode,
    seconds ? `${seconds} s` : "",
    shots ? `${shots} shot${shots > 1 ? "s" : ""}` : "",
    entry.id,
  ];
  el.querySelector(".meta").textContent = meta.filter(Boolean).join(" · ");
  el.querySelector("progress").setAttribute("aria-label", `Progress of “${title}”`);
  const remove = el.querySelector(".remove");
  remove.setAttribute("aria-label", `Remove “${title}”`);
  remove.addEventListener("click", () => removeCard(entry.id));
  const card = { entry, el, stream: null, done: false, retries: 0, timer: 0, firstReading: null };
  cards.set(entry.id, card);
  if (atTop) list.prepend(el);
  else list.append(el);
  noTasks.hidden = true;
  return card;
}

function removeCard(id) {
  const card = cards.get(id);
  if (!card) return;
  clearTimeout(card.timer);
  const next = card.el.nextElementSibling || card.el.previousElementSibling;
  cards.delete(id);
  const queued = waiting.indexOf(id);
  if (queued >= 0) waiting.splice(queued, 1);
  closeStream(card);
  card.el.remove();
  saveEntries();
  noTasks.hidden = cards.size > 0;
  (next ? next.querySelector(".remove") : form.elements.prompt).focus();
}

function setStatus(card, text) {
  card.el.querySelector(".status").textContent = text;
}

function showProblem(card, message) {
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  card.el.querySelector(".outcome").replaceChildren(p);
}

function showVideo(card, urls) {
  if (!urls.length || !/^https?:\/\//i.test(urls[0])) {
    showProblem(card, "The task completed without a usable video URL.");
    return;
  }
  const video = document.createElement("video");
  video.controls = true;
  video.preload = "metadata";
  video.playsInline = true;
  video.setAttribute("aria-label", `Video of “${titleOf(card.entry)}”`);
  video.src = urls[0];
  video.addEventListener("error", () => {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = "The video did not load (result links expire: reload for a fresh one).";
    video.after(p);
  }, { once: true });
  const link = document.createElement("a");
  link.href = urls[0];
  link.textContent = "Open the video";
  card.el.querySelector(".outcome").replaceChildren(video, link);
}

// Show one status body (TaskOut in app.py) on its card.
function show(card, snapshot) {
  const status = snapshot.status;
  const progress = card.el.querySelector("progress");
  card.el.dataset.status = status;
  progress.value = Number(snapshot.progress) || 0;
  let words = STATUS_WORDS[status] || `Status: ${status}`;
  if (!TERMINAL.has(status)) {
    words += ` · ${progress.value}%`;
    const eta = etaWords(card, snapshot);
    if (eta) words += ` · ${eta}`;
  }
  setStatus(card, words);
  if (!TERMINAL.has(status) || card.done) return;
  card.done = true;
  if (status === "completed") {
    showVideo(card, snapshot.video_urls || []);
  } else if (status === "failed") {
    const error = snapshot.error || {};
    const code = error.code ? ` (${error.code})` : "";
    showProblem(card, `${error.message || "The generation failed."}${code}`);
  } else {
    showProblem(card, "The task was cancelled; it has no video.");
  }
}

// -- following a task --------------------------------------------------------------------

function follow(card) {
  if (card.done || card.stream || card.timer || cards.get(card.entry.id) !== card) return;
  if (streaming < MAX_STREAMS) {
    openStream(card);
  } else if (!waiting.includes(card.entry.id)) {
    waiting.push(card.entry.id);
    setStatus(card, "Waiting for a free connection…");
  }
}

function openStream(card) {
  const stream = new EventSource(`/videos/${encodeURIComponent(card.entry.id)}/events`);
  card.stream = stream;
  streaming += 1;
  stream.addEventListener("progress", (event) => {
    card.retries = 0;
    show(card, JSON.parse(event.data));
  });
  stream.addEventListener("done", (event) => {
    closeStream(card); // before the server ends the stream, so the browser does not reconnect
    show(card, JSON.parse(event.data));
  });
  stream.addEventListener("error", (event) => {
    if (typeof event.data === "string") {
      // The service's own "error" event: it could not follow the task.
      closeStream(card);
      let body = {};
      try {
        body = JSON.parse(event.data);
      } catch {
        // keep the generic message
      }
      cannotFollow(card, body.status, messageOf(body.status, body));
    } else if (stream.readyState === EventSource.CONNECTING) {
      setStatus(card, "Connection lost; reconnecting…"); // the browser retries by itself
    } else {
      // The service refused the stream with an HTTP error: ask it why.
      closeStream(card);
      diagnose(card);
    }
  });
}

function closeStream(card) {
  if (card.stream) {
    card.stream.close();
    card.stream = null;
    streaming -= 1;
  }
  while (waiting.length && streaming < MAX_STREAMS) {
    const next = cards.get(waiting.shift());
    if (next) follow(next);
  }
}

async function diagnose(card) {
  let response;
  try {
    response = await fetch(`/videos/${encodeURIComponent(card.entry.id)}`);
  } catch {
    retryLater(card, "The service is unreachable");
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (response.ok) {
    show(card, body);
    if (!card.done) retryLater(card, "The event stream closed");
    return;
  }
  const message = messageOf(response.status, body);
  cannotFollow(card, response.status, message, response.headers.get("Retry-After"));
}

function cannotFollow(card, status, message, retryAfter) {
  if (status === 404 || status === 410 || status === 422) {
    // Final: no such task, or nothing more to learn about it.
    card.done = true;
    card.el.dataset.status = status === 404 ? "lost" : "failed";
    setStatus(card, status === 404 ? "Not found" : "Failed");
    showProblem(
      card,
      status === 404 ? "The service does not know this task (or no longer keeps it)." : message,
    );
    return;
  }
  retryLater(card, message, retryAfter);
}

function retryLater(card, reason, retryAfter) {
  card.retries += 1;
  const backoff = Math.min(MAX_BACKOFF, 2 ** card.retries);
  const wait = Math.max(Number(retryAfter) || 0, backoff);
  setStatus(card, `${reason}; trying again in ${inWords(wait)}…`);
  card.timer = setTimeout(() => {
    card.timer = 0;
    follow(card);
  }, wait * 1000);
}

// -- the shot list ----------------------------------------------------------------------

// Number the shots and name their controls after their place ("Shot 2 prompt"...).
function renumberShots() {
  [...shotList.children].forEach((row, i) => {
    const n = i + 1;
    const prompt = row.querySelector(".shot-prompt");
    const seconds = row.querySelector(".shot-seconds");
    prompt.id = `shot-${n}-prompt`;
    seconds.id = `shot-${n}-seconds`;
    row.querySelector(".shot-prompt-label").htmlFor = prompt.id;
    row.querySelector(".shot-prompt-label").textContent = `Shot ${n} prompt`;
    row.querySelector(".shot-seconds-label").htmlFor = seconds.id;
    seconds.setAttribute("aria-label", `Shot ${n} seconds`);
    row.querySelector(".remove-shot").setAttribute("aria-label", `Remove shot ${n}`);
  });
  addShot.disabled = shotList.children.length >= MAX_SHOTS;
}

addShot.addEventListener("click", () => {
  const row = shotTemplate.content.firstElementChild.cloneNode(true);
  row.querySelector(".remove-shot").addEventListener("click", () => {
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    renumberShots();
    (next ? next.querySelector(".shot-prompt") : addShot).focus();
  });
  shotList.append(row);
  renumberShots();
  row.querySelector(".shot-prompt").focus();
});

// The shots as the API's multi_prompt (the service numbers them), or null for none.
function shotsOf() {
  const shots = [...shotList.children].map((row) => ({
    prompt: row.querySelector(".shot-prompt").value,
    duration: Number(row.querySelector(".shot-seconds").value),
  }));
  return shots.length ? shots : null;
}

// -- submitting --------------------------------------------------------------------------

function showFormError(message) {
  formError.textContent = message;
  formError.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button[type=submit]");
  const fields = new FormData(form);
  const shots = shotsOf();
  const prompt = String(fields.get("prompt")).trim();
  const request = { mode: String(fields.get("mode")) };
  if (prompt || !shots) request.prompt = prompt;
  if (shots) request.multi_prompt = shots; // the video lasts the shots' total
  else request.duration = Number(fields.get("duration"));
  formError.hidden = true;
  button.disabled = true; // submitting is paid: no double submit while one is on its way
  try {
    const response = await fetch("/videos", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const retryAfter = Number(response.headers.get("Retry-After"));
      const later = retryAfter > 0 ? ` Try again in ${inWords(retryAfter)}.` : "";
      const message = messageOf(response.status, body).replace(/\.$/, "");
      showFormError(`Not submitted: ${message}.${later}`);
      return;
    }
    const card = addCard({ ...request, id: body.id, submitted: Date.now() }, true);
    saveEntries();
    follow(card);
  } catch {
    showFormError("The service did not answer; it may still have accepted the task.");
  } finally {
    button.disabled = false;
  }
});

for (const entry of loadEntries()) follow(addCard(entry, false));
