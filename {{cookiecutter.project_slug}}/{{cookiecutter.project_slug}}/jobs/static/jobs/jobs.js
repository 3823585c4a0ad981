// The jobs page: upload straight to storage, start a job, follow it over SSE (or by polling), list results.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
// The registered job kinds: name, label, content types, file name endings, largest upload.
const kinds = JSON.parse(document.getElementById("job-kinds").textContent);
const rows = new Map();
// The job the upload status line speaks of: its final state replaces "job started.".
let announced = null;

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(url, body) {
  const response = await fetch(url, {
    method: body === undefined ? "GET" : "POST",
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = data.error ? data.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

function kindOf(file) {
  const name = file.name.toLowerCase();
  return kinds.find((kind) => kind.content_types.includes(file.type))
    || kinds.find((kind) => kind.extensions.some((ending) => name.endsWith(ending)))
    || null;
}

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  td.className = className;
  return td;
}

function say(text, isError = false) {
  // Refusals and failures read as errors, not as one more line of progress.
  const status = document.getElementById("upload-status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function errorText(error) {
  // The short class name and the message; the class path stays in the API's "type" for programs.
  const name = error.name || String(error.type || "Error").split(".").pop();
  return `${name}: ${error.message}`;
}

function startedCell(state) {
  // Jobs of the same file are told apart by when they were started, shown in the reader's time zone, and by the
  // start of their id: two uploads within one second show the same time.
  const td = cell("", "started");
  const time = document.createElement("time");
  time.dateTime = state.created;
  time.textContent = new Date(state.created).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
  const id = document.createElement("span");
  id.className = "job-id";
  id.title = state.id;
  id.textContent = state.id.slice(0, 8);
  td.append(time, " ", id);
  return td;
}

function localTime(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { timeStyle: "medium" });
}

function noteText(state) {
  // The API's note says what the job waits for or where it runs; the page adds since when, in the reader's zone.
  if (state.waiting && state.waiting.since) return `${state.note}, since ${localTime(state.waiting.since)}`;
  if (state.status === "running" && state.started) return `${state.note}, since ${localTime(state.started)}`;
  return state.note === state.status ? "" : state.note || "";
}

async function cancelJob(state, button) {
  button.disabled = true;
  try {
    render(await api(state.urls.cancel, {}));
  } catch (error) {
    say(`${state.filename || "(no name)"}: cannot cancel: ${error.message}`, true);
    button.disabled = false;
  }
}

function rowFor(state) {
  let row = rows.get(state.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.job = state.id;
    row.append(cell(state.filename || "(no name)", "file"), cell(state.kind, "kind"), startedCell(state),
      cell("", "status"), cell("", "progress"), cell("", "links"));
    row.querySelector("td.progress").innerHTML = '<div class="bar"><div class="fill"></div><span class="label"></span></div>' +
      '<div class="progress-message"></div>';
    document.querySelector("#jobs tbody").prepend(row);
    rows.set(state.id, row);
    document.getElementById("no-jobs").hidden = true;
  }
  return row;
}

function render(state) {
  const row = rowFor(state);
  row.className = `status-${state.status}`;
  row.dataset.status = state.status;
  const badge = document.createElement("span");
  badge.className = `badge ${state.status}`;
  badge.textContent = state.status;
  const note = document.createElement("div");
  note.className = "state-note";
  note.textContent = noteText(state);
  row.querySelector("td.status").replaceChildren(badge, note);
  const fraction = state.status === "succeeded" ? 1 : (state.progress && state.progress.fraction) || 0;
  const percent = Math.round(fraction * 100);
  row.querySelector(".fill").style.width = `${percent}%`;
  row.querySelector(".label").textContent = `${percent} %`;
  row.querySelector(".bar").dataset.percent = String(percent);
  const message = state.error ? errorText(state.error) : (state.progress && state.progress.message) || "";
  row.querySelector(".progress-message").textContent = message;
  row.querySelector(".progress-message").classList.toggle("error", Boolean(state.error));
  const links = row.querySelector("td.links");
  links.replaceChildren();
  for (const [name, url] of Object.entries(state.links || {})) {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = name;
    a.setAttribute("download", name);
    links.append(a);
  }
  if (state.expired) {
    const expired = document.createElement("span");
    expired.className = "expired hint";
    expired.textContent = `Results expired ${new Date(state.expired).toLocaleDateString()}`;
    links.append(expired);
  }
  if (!state.final && state.urls && state.urls.cancel) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cancel";
    button.textContent = "Cancel";
    button.addEventListener("click", () => cancelJob(state, button));
    links.append(button);
  }
  if (state.final && state.id === announced) {
    announced = null;
    const name = state.filename || "(no name)";
    if (state.status === "failed") say(`${name}: job failed: ${state.error ? errorText(state.error) : "no reason given"}`, true);
    else say(`${name}: job ${state.status}.`);
  }
}

function poll(state) {
  // Fallback when the event stream cannot be used: ask for the status until the job is final.
  setTimeout(async () => {
    try {
      const next = await api(state.urls.status);
      render(next);
      if (!next.final) poll(next);
    } catch (error) {
      poll(state);
    }
  }, config.pollMs);
}

function follow(state) {
  render(state);
  if (state.final) return;
  if (!("EventSource" in window)) return poll(state);
  const source = new EventSource(state.urls.events);
  let heard = false;
  source.addEventListener("status", (event) => {
    heard = true;
    const next = JSON.parse(event.data);
    render(next);
    if (next.final) source.close();
  });
  source.onerror = () => {
    // The server closes the stream at the final state and after a time limit; the browser reconnects
    // unless we stop it. A stream that never delivered an event falls back to polling.
    if (!heard) {
      source.close();
      poll(state);
    }
  };
}

async function upload(file) {
  const found = kindOf(file);
  if (!found) {
    const accepted = kinds.map((kind) => kind.label).join(", ") || "none registered";
    say(`${file.name}: refused, no kind of job takes this file (kinds: ${accepted}).`, true);
    return;
  }
  const kind = found.name;
  say(`Uploading ${file.name}...`);
  // A browser may send no type (or a generic one) for a file the kind knows by its name ending.
  const contentType = found.content_types.includes(file.type) ? file.type : found.content_types[0];
  const form = await api(config.uploads, { kind, filename: file.name, content_type: contentType, size: file.size });
  const body = new FormData();
  for (const [name, value] of Object.entries(form.fields)) body.append(name, value);
  body.append("file", new File([file], file.name, { type: contentType }));
  const target = new URL(form.url, window.location.href);
  const sameOrigin = target.origin === window.location.origin;
  // Object storage on another origin answers without CORS headers: the upload is checked by the server next.
  const response = await fetch(target, {
    method: "POST",
    body,
    mode: sameOrigin ? "same-origin" : "no-cors",
    credentials: sameOrigin ? "same-origin" : "omit",
    headers: sameOrigin ? { "X-CSRFToken": csrfToken() } : {},
  });
  if (sameOrigin && !response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.error ? data.error.message : `upload failed: HTTP ${response.status}`);
  }
  say(`Starting the job for ${file.name}...`);
  const started = await api(config.jobs, { kind, upload: form.upload });
  const state = await api(started.urls.status);
  say(`${file.name}: job started.`);
  announced = state.id;
  follow(state);
}

async function refreshQueues() {
  try {
    const data = await api(config.queues);
    const body = document.querySelector("#queues tbody");
    body.replaceChildren();
    const shown = (count) => (count === null || count === undefined ? "–" : String(count));
    for (const [queue, depth] of Object.entries(data.queues)) {
      const row = document.createElement("tr");
      row.dataset.queue = queue;
      const dead = cell(shown(data.dead[queue]));
      // Staff may send dead-lettered messages back to their queue (RabbitMQ only: Redis has no dead letters).
      if (config.staff && data.dead[queue]) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Requeue";
        button.addEventListener("click", async () => {
          const moved = await api(`${config.queues}/${encodeURIComponent(queue)}/requeue-dead`, {});
          say(`${moved.requeued} dead-lettered message(s) of ${queue} requeued.`);
          refreshQueues();
        });
        dead.append(" ", button);
      }
      row.append(cell(queue), cell(shown(depth)), cell(shown(data.unacked[queue])), dead);
      body.append(row);
    }
    document.getElementById("queues-note").textContent = data.error
      ? `Broker unreachable: ${data.error}`
      : `Messages waiting in the ${data.transport} broker, held by workers unacknowledged, and dead-lettered.`;
  } catch (error) {
    document.getElementById("queues-note").textContent = `Queue depths unavailable: ${error.message}`;
  }
}

// The form is there only when some app registered a kind of job.
document.getElementById("upload-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("file");
  const button = document.getElementById("start");
  if (!input.files.length) return;
  button.disabled = true;
  try {
    await upload(input.files[0]);
    input.value = "";
  } catch (error) {
    say(`Refused: ${error.message}`, true);
  } finally {
    button.disabled = false;
  }
});

for (const state of JSON.parse(document.getElementById("initial-jobs").textContent).reverse()) follow(state);
refreshQueues();
setInterval(refreshQueues, 5000);
