// The console's page. Everything the bus or a service sent is shown with textContent,
// never parsed as HTML.
"use strict";

const MAX_ROWS = 500;
let selected = null; // the event whose journey is shown
let journeyTimer = null;
let stream = null;
let appMap = null;
let followTimer = null;
// A journey is polled this many times at most (a minute), whole or not.
const MAX_JOURNEY_POLLS = 240;
const box = () => document.getElementById("journey");

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function getJson(url, options) {
  const answer = await fetch(url, options);
  if (!answer.ok) throw new Error(url + " answered " + answer.status);
  return answer.json();
}

function filters() {
  const form = document.getElementById("filters");
  const params = new URLSearchParams();
  for (const name of ["type", "entity", "correlation"]) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

// --- the map -----------------------------------------------------------------------

function renderMap(data) {
  appMap = data;
  document.getElementById("app").textContent = data.app;
  const status = [data.bus === "nats" ? "NATS JetStream" : "HTTP event bus",
    "log read to #" + data.tap.position,
    data.spans.received + " spans received"];
  if (data.tap.error) status.push("the bus cannot be read: " + data.tap.error);
  document.getElementById("status").textContent = status.join(" · ");
  const map = document.getElementById("map");
  map.replaceChildren();
  for (const s of data.services) {
    if (s.sends.length === 0 && s.receives.length === 0) continue;
    const card = el("article", null, "service");
    card.dataset.service = s.name;
    card.append(el("h3", s.name), el("p", s.about, "about"));
    const applied = data.applied[s.name] || {};
    if (s.sends.length) {
      const list = el("ul", null, "sends");
      for (const t of s.sends) {
        const li = el("li", "→ " + t);
        li.append(el("span", String(data.seen[t] || 0), "count"));
        list.append(li);
      }
      card.append(el("h4", "sends"), list);
    }
    if (s.receives.length) {
      const list = el("ul", null, "receives");
      for (const t of s.receives) {
        const li = el("li", "← " + t);
        li.append(el("span", String(applied[t] || 0), "count"));
        list.append(li);
      }
      card.append(el("h4", "receives (applied)"), list);
    }
    map.append(card);
  }
}

async function refreshMap() {
  try {
    renderMap(await getJson("/api/map"));
  } catch (e) {
    document.getElementById("status").textContent = "The console does not answer: " + e.message;
  }
}

// --- the live log --------------------------------------------------------------------

function addRow(event) {
  const body = document.querySelector("#log tbody");
  if (body.querySelector('tr[data-seq="' + event.seq + '"]')) return;
  const row = el("tr");
  row.dataset.seq = event.seq;
  row.dataset.id = event.id;
  row.dataset.type = event.type;
  row.append(
    el("td", event.seq),
    el("td", event.type, "type"),
    el("td", event.entities.join(", "), "ids"),
    el("td", event.correlationId || "", "ids"),
    el("td", new Date(event.seenAtMs).toLocaleTimeString()),
  );
  row.addEventListener("click", () => select(event));
  body.prepend(row);
  while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
  if (document.getElementById("follow").checked) {
    // Once the rows stop coming (a backlog arrives all at once): the newest only.
    clearTimeout(followTimer);
    followTimer = setTimeout(() => select(event), 30);
  }
}

function openStream() {
  if (stream) stream.close();
  document.querySelector("#log tbody").replaceChildren();
  stream = new EventSource("/api/events/stream?" + filters().toString());
  stream.onmessage = (m) => addRow(JSON.parse(m.data));
  stream.addEventListener("lagged", (m) => {
    const row = el("tr", null, "lagged");
    row.append(el("td", m.data + " events not shown (the page fell behind)"));
    document.querySelector("#log tbody").prepend(row);
  });
}

// --- one event's journey -------------------------------------------------------------

function select(event) {
  selected = event;
  for (const row of document.querySelectorAll("#log tr.selected")) row.classList.remove("selected");
  const row = document.querySelector('#log tr[data-seq="' + event.seq + '"]');
  if (row) row.classList.add("selected");
  if (journeyTimer) clearInterval(journeyTimer);
  let quietPolls = 0;
  let polls = 0;
  const poll = async () => {
    if (selected !== event) return;
    if (++polls > MAX_JOURNEY_POLLS) {
      clearInterval(journeyTimer);
      return;
    }
    try {
      const journey = await getJson("/api/events/" + encodeURIComponent(event.id) + "/journey");
      if (selected !== event) return;
      renderJourney(journey);
      if (box().dataset.complete === "true" && ++quietPolls > 8) clearInterval(journeyTimer);
    } catch (e) {
      document.getElementById("journey").textContent = e.message;
    }
    if (event.traceId) refreshTrace(event.traceId);
  };
  poll();
  journeyTimer = setInterval(poll, 250);
}

function renderJourney(journey) {
  const box = document.getElementById("journey");
  box.className = "";
  box.dataset.eventId = journey.event.id;
  box.dataset.entity = journey.event.entities.join(" ");
  // Whole: committed and published by its service, appended by the HTTP bus, applied by
  // every consumer (each process sends its spans in its own batches, so they arrive apart).
  const has = (step) => journey.steps.some((s) => s.step === step);
  const whole = journey.waitingFor.length === 0 && has("committed") && has("published") &&
    (!appMap || appMap.bus !== "http" || has("appended"));
  box.dataset.complete = whole ? "true" : "false";
  const head = el("p", null, "event");
  head.append(el("strong", journey.event.type), el("span", " " + journey.event.id, "ids"));
  const data = el("pre", JSON.stringify(journey.event.data, null, 1), "data");
  const list = el("ol", null, "steps");
  const start = journey.steps.length ? journey.steps[0].atMs : 0;
  for (const s of journey.steps) {
    const who = s.consumer && s.consumer !== s.service ? s.service + " → " + s.consumer : s.service;
    const li = el("li", null, "step " + s.step);
    li.dataset.step = s.step;
    li.dataset.service = s.service;
    li.append(
      el("span", "+" + (s.atMs - start).toFixed(1) + " ms", "at"),
      el("span", s.step, "what"),
      el("span", who, "who"),
      el("span", s.tookMs.toFixed(1) + " ms", "took"),
    );
    if (s.outcome) li.append(el("span", s.outcome, "outcome"));
    list.append(li);
  }
  const waiting = journey.waitingFor.length
    ? el("p", "Not applied yet by: " + journey.waitingFor.join(", "), "waiting")
    : el("p", "Applied by every consumer of " + journey.event.type + ".", "done");
  if (journey.steps.length === 0) {
    waiting.textContent = "No spans for it (yet): the services export them to the console when OTEL_EXPORTER_OTLP_ENDPOINT names it.";
  }
  box.replaceChildren(head, list, waiting, data);
}

// --- a trace as a waterfall ----------------------------------------------------------

async function refreshTrace(traceId) {
  let spans;
  try {
    spans = await getJson("/api/traces/" + traceId);
  } catch (e) {
    return;
  }
  const box = document.getElementById("waterfall");
  box.className = "";
  box.dataset.traceId = traceId;
  if (spans.length === 0) {
    box.replaceChildren(el("p", "No spans of trace " + traceId + " (yet).", "empty"));
    return;
  }
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_span_id && ids.has(s.parent_span_id)) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    } else {
      roots.push(s);
    }
  }
  const t0 = Math.min(...spans.map((s) => s.start_unix_nanos));
  const t1 = Math.max(...spans.map((s) => s.end_unix_nanos));
  const total = Math.max(t1 - t0, 1);
  const rows = [];
  const walk = (s, depth) => {
    rows.push([s, depth]);
    for (const c of children.get(s.span_id) || []) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, 0);
  const table = el("div", null, "waterfall");
  table.append(el("p", "trace " + traceId + " · " + ((t1 - t0) / 1e6).toFixed(1) + " ms · " + spans.length + " spans", "ids"));
  for (const [s, depth] of rows) {
    const row = el("div", null, "span-row" + (s.error ? " failed" : ""));
    const label = el("span", s.service + " · " + s.name, "label");
    label.style.paddingLeft = depth * 12 + "px";
    const lane = el("span", null, "lane");
    const bar = el("span", null, "bar " + s.kind);
    bar.style.left = ((s.start_unix_nanos - t0) / total) * 100 + "%";
    bar.style.width = Math.max(((s.end_unix_nanos - s.start_unix_nanos) / total) * 100, 0.3) + "%";
    bar.title = ((s.end_unix_nanos - s.start_unix_nanos) / 1e6).toFixed(2) + " ms";
    lane.append(bar);
    row.append(label, lane, el("span", ((s.end_unix_nanos - s.start_unix_nanos) / 1e6).toFixed(1) + " ms", "took"));
    table.append(row);
  }
  box.replaceChildren(table);
}

// --- consumers, dead letters, advisories --------------------------------------------

async function refreshConsumers() {
  let data;
  try {
    data = await getJson("/api/consumers");
  } catch (e) {
    return;
  }
  const body = document.querySelector("#consumers tbody");
  body.replaceChildren();
  const show = (v) => (v === null || v === undefined ? "–" : String(v));
  for (const c of data.consumers) {
    const row = el("tr");
    row.dataset.service = c.service;
    row.append(el("td", c.service), el("td", show(c.position)), el("td", show(c.lag), c.lag > 0 ? "warn" : ""),
      el("td", show(c.inFlight)), el("td", show(c.deferred), c.deferred > 0 ? "warn" : ""),
      el("td", show(c.deadLetters), c.deadLetters > 0 ? "bad" : ""));
    const cell = el("td");
    if (c.error) {
      cell.textContent = c.error;
    } else {
      const button = el("button", "dead letters");
      button.addEventListener("click", () => showDeadLetters(c.service));
      cell.append(button);
    }
    row.append(cell);
    body.append(row);
  }
  const advisories = document.getElementById("advisories");
  if (data.advisories.length) {
    advisories.replaceChildren(...data.advisories.slice(0, 50).map((a) =>
      el("li", (a.type || a.subject) + " · consumer " + (a.consumer || "?") + " · stream seq " + (a.stream_seq || "?"))));
  }
}

async function showDeadLetters(service) {
  const box = document.getElementById("dead-letters");
  let letters;
  try {
    letters = await getJson("/api/consumers/" + encodeURIComponent(service) + "/dead-letters");
  } catch (e) {
    box.textContent = e.message;
    return;
  }
  const title = el("h3", "Dead letters of " + service);
  if (letters.length === 0) {
    box.replaceChildren(title, el("p", "None.", "empty"));
    return;
  }
  const list = el("ul");
  for (const d of letters) {
    const li = el("li", d.id + " · " + (d.event_type || d.eventType || "?") + " · " + d.reason + " ");
    const button = el("button", "replay");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const r = await getJson("/api/consumers/" + encodeURIComponent(service) + "/dead-letters/" +
          encodeURIComponent(d.id) + "/replay", { method: "POST", headers: { "x-switchyard-console": "replay" } });
        li.append(el("span", r.replayed ? " replayed" : " nothing to replay", "outcome"));
      } catch (e) {
        li.append(el("span", " " + e.message, "bad"));
      }
    });
    li.append(button);
    list.append(li);
  }
  box.replaceChildren(title, list);
}

// --- start -------------------------------------------------------------------------

document.getElementById("filters").addEventListener("submit", (e) => {
  e.preventDefault();
  openStream();
});
document.getElementById("filters").addEventListener("reset", () => setTimeout(openStream, 0));
refreshMap();
refreshConsumers();
openStream();
setInterval(refreshMap, 2000);
setInterval(refreshConsumers, 2000);
