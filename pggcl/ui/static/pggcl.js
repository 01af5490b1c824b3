// pggcl UI: live updates pushed by the server (server-sent events), and the occupancy chart
// drawn as inline SVG. The server formats every value; this script only puts it in place.
"use strict";

(function () {
  const body = document.body;

  // Forms that ask first (releasing a lease). Without script they submit directly.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  if (!body.dataset.events) return;

  // --- Small helpers ----------------------------------------------------------------------

  function setText(root, field, value) {
    for (const el of root.querySelectorAll(`[data-field="${field}"]`)) el.textContent = String(value);
  }

  function setFlag(root, active, text) {
    for (const el of root.querySelectorAll('[data-field="active_text"]')) {
      el.textContent = text;
      el.className = "flag " + (active ? "on" : "off");
    }
  }

  function setBar(root, bar) {
    const el = root.querySelector(".bar");
    if (!el) return;
    el.classList.toggle("over", bar.over);
    el.title = bar.title;
    const [held, decaying] = el.querySelectorAll("rect");
    held.setAttribute("width", bar.held_pct);
    decaying.setAttribute("x", bar.held_pct);
    decaying.setAttribute("width", bar.decaying_pct);
    setText(el, "bar-text", bar.text);
  }

  function setToggle(root, view) {
    const form = root.querySelector("form.toggle");
    if (!form) return;
    form.querySelector('input[name="name"]').value = view.name;
    form.querySelector('input[name="active"]').value = view.active ? "false" : "true";
    form.querySelector("button").textContent = view.active ? "Deactivate" : "Activate";
  }

  function fromTemplate(id) {
    return document.getElementById(id).content.firstElementChild.cloneNode(true);
  }

  // --- The stream -----------------------------------------------------------------------------

  const live = document.getElementById("live");
  const statusBanner = document.getElementById("status");
  const source = new EventSource(body.dataset.events);

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }
  source.addEventListener("open", () => setLive("on", "live"));
  source.addEventListener("error", () => setLive("off", "reconnecting"));
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data);
    statusBanner.hidden = !status.error;
    statusBanner.textContent = status.error ? "Live updates paused: " + status.error : "";
  });

  // --- The limits page ------------------------------------------------------------------------

  function fillLimitRow(tr, view) {
    tr.dataset.name = view.name;
    const link = tr.querySelector('[data-field="link"]');
    link.href = view.url;
    link.textContent = view.name;
    for (const field of ["limit", "decay", "waiting"]) setText(tr, field, view[field]);
    setFlag(tr, view.active, view.active_text);
    setBar(tr, view.bar);
    setToggle(tr, view);
    for (const el of tr.querySelectorAll("[data-href]")) el.href = view[el.dataset.href];
  }

  source.addEventListener("limits", (event) => {
    const views = JSON.parse(event.data);
    const tbody = document.querySelector("#limits tbody");
    const rows = new Map(Array.from(tbody.rows, (tr) => [tr.dataset.name, tr]));
    let previous = null;
    for (const view of views) {
      let tr = rows.get(view.name);
      if (tr) rows.delete(view.name);
      else tr = fromTemplate("limit-row");
      fillLimitRow(tr, view);
      const expected = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (tr !== expected) tbody.insertBefore(tr, expected);
      previous = tr;
    }
    for (const tr of rows.values()) tr.remove();
    document.getElementById("empty").hidden = views.length > 0;
  });

  // --- A limit's page -------------------------------------------------------------------------

  function fillTable(id, items, fill) {
    const tbody = document.querySelector(`#${id} tbody`);
    tbody.replaceChildren(...items.map((item) => {
      const tr = fromTemplate(`${id}-row`);
      fill(tr, item);
      return tr;
    }));
    document.querySelector(`[data-empty="${id}"]`).hidden = items.length > 0;
    document.querySelector(`[data-count="${id}"]`).textContent = String(items.length);
  }

  function fillHolder(tr, holder) {
    tr.dataset.lease = holder.lease_id;
    for (const field of ["lease_id", "slots", "holder", "since", "expires"]) setText(tr, field, holder[field]);
    const lease = tr.querySelector('input[name="lease_id"]');
    if (lease) lease.value = holder.lease_id;
  }

  function fillWaiter(tr, waiter) {
    for (const field of ["position", "occupy", "mode", "holder", "since"]) setText(tr, field, waiter[field]);
  }

  source.addEventListener("limit", (event) => {
    const detail = JSON.parse(event.data);
    const view = detail.limit;
    document.getElementById("gone").hidden = view !== null;
    const summary = document.getElementById("summary");
    summary.classList.toggle("stale", view === null);
    if (view) {
      for (const field of ["limit", "decay", "held", "decaying", "waiting"]) setText(summary, field, view[field]);
      setFlag(summary, view.active, view.active_text);
      setBar(summary, view.bar);
      const actions = document.getElementById("limit-actions");
      if (actions) setToggle(actions, view);
    }
    fillTable("holders", detail.holders, fillHolder);
    fillTable("queue", detail.queue, fillWaiter);
  });

  // --- The chart ------------------------------------------------------------------------------

  // Samples are [time (epoch seconds), held, decaying, limit], kept when they change; a value
  // holds until the next sample, so the chart is drawn in steps.
  const chart = { since: 0, window: 300, now: 0, samples: [] };

  source.addEventListener("history", (event) => {
    const history = JSON.parse(event.data);
    chart.since = history.since;
    chart.window = history.window;
    chart.samples = history.samples;
    chart.now = chart.samples.length ? chart.samples[chart.samples.length - 1][0] : history.since;
    draw();
  });

  source.addEventListener("sample", (event) => {
    const sample = JSON.parse(event.data);
    const last = chart.samples[chart.samples.length - 1];
    if (!last || last[1] !== sample[1] || last[2] !== sample[2] || last[3] !== sample[3]) {
      chart.samples.push(sample);
    }
    chart.now = sample[0];
    const start = chart.now - chart.window;
    while (chart.samples.length > 1 && chart.samples[1][0] <= start) chart.samples.shift();
    draw();
  });

  const SVG = "http://www.w3.org/2000/svg";
  const H = 180, LEFT = 40, RIGHT = 10, TOP = 10, BOTTOM = 24;
  window.addEventListener("resize", () => draw());

  function node(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function niceCeiling(value) {
    const steps = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10];
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of steps) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  function ago(seconds) {
    return seconds >= 120 ? `${Math.round(seconds / 60)} min ago` : `${Math.round(seconds)} s ago`;
  }

  function stepPath(points, x, y, value, end) {
    let d = "";
    for (const p of points) {
      d += d ? ` H${x(p[0]).toFixed(1)} V${y(value(p)).toFixed(1)}` : `M${x(p[0]).toFixed(1)} ${y(value(p)).toFixed(1)}`;
    }
    return d ? `${d} H${end.toFixed(1)}` : d;
  }

  function draw() {
    const svg = document.getElementById("chart");
    if (!svg) return;
    // Draw in the pixels the chart has, so that text keeps its size at any width.
    const W = Math.max(320, Math.round(svg.getBoundingClientRect().width));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const span = Math.min(chart.window, Math.max(60, chart.now - chart.since));
    const t0 = chart.now - span;
    const points = chart.samples.map((s) => [Math.max(s[0], t0), s[1], s[2], s[3]]);
    const top = niceCeiling(Math.max(1, ...points.map((p) => Math.max(p[3], p[1] + p[2]))) * 1.1);
    const x = (t) => LEFT + ((t - t0) / span) * (W - LEFT - RIGHT);
    const y = (v) => H - BOTTOM - (v / top) * (H - TOP - BOTTOM);
    const parts = [];
    for (const v of [0, top / 2, top]) {
      parts.push(node("line", { class: "grid", x1: LEFT, x2: W - RIGHT, y1: y(v), y2: y(v) }));
      parts.push(node("text", { class: "axis", x: LEFT - 6, y: y(v) + 4, "text-anchor": "end" }, String(+v.toFixed(2))));
    }
    parts.push(node("text", { class: "axis", x: LEFT, y: H - 6 }, ago(span)));
    parts.push(node("text", { class: "axis", x: W - RIGHT, y: H - 6, "text-anchor": "end" }, "now"));
    if (points.length) {
      const end = x(chart.now);
      const base = y(0).toFixed(1);
      const total = stepPath(points, x, y, (p) => p[1] + p[2], end);
      const held = stepPath(points, x, y, (p) => p[1], end);
      const first = x(points[0][0]).toFixed(1);
      parts.push(node("path", { class: "area decaying", d: `${total} V${base} H${first} Z` }));
      parts.push(node("path", { class: "area held", d: `${held} V${base} H${first} Z` }));
      parts.push(node("path", { class: "line total", d: total }));
      parts.push(node("path", { class: "line limit", d: stepPath(points, x, y, (p) => p[3], end) }));
    } else {
      parts.push(node("text", { class: "axis", x: W / 2, y: H / 2, "text-anchor": "middle" }, "collecting samples…"));
    }
    svg.replaceChildren(...parts);
    svg.dataset.samples = String(chart.samples.length);
  }
})();
