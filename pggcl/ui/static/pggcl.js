// pggcl UI: live updates pushed by the server (server-sent events), and the charts (occupancy,
// grants per second, wait time) drawn as inline SVG. The server formats every value shown in
// the tables; this script only puts it in place (it labels the charts' axes itself).
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

  // Templates, apart: all their instances together, and their busiest few (as links).
  function fillTemplateRow(tr, view) {
    tr.dataset.template = view.name;
    const link = tr.querySelector('[data-field="link"]');
    link.href = view.url;
    link.textContent = view.name;
    for (const field of ["limit", "instances", "occupancy", "waiting", "grants"]) setText(tr, field, view[field]);
    const cell = tr.querySelector('[data-field="busiest"]');
    const parts = [];
    view.busiest.forEach((instance, i) => {
      if (i > 0) parts.push(", ");
      const a = document.createElement("a");
      a.href = instance.url;
      a.textContent = instance.name;
      const text = document.createElement("span");
      text.className = "muted";
      text.textContent = instance.text;
      parts.push(a, " ", text);
    });
    cell.replaceChildren(...parts);
  }

  source.addEventListener("templates", (event) => {
    const views = JSON.parse(event.data);
    const section = document.getElementById("templates-section");
    if (!section) return;
    const tbody = section.querySelector("#templates tbody");
    tbody.replaceChildren(...views.map((view) => {
      const tr = fromTemplate("template-row");
      fillTemplateRow(tr, view);
      return tr;
    }));
    section.hidden = views.length === 0;
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
    tr.dataset.waiter = waiter.waiter_id;
    for (const field of ["position", "priority", "occupy", "mode", "holder", "since"]) setText(tr, field, waiter[field]);
    tr.querySelector('[data-why="limits"]').replaceChildren(...waiter.why.map(whyLimit));
  }

  // Why a queued request waits, one item per limit it waits on (the server formats each text;
  // a holder's text is someone else's, so it only ever goes in as text).
  function setWhy(root, field, value) {
    const el = root.querySelector(`[data-why="${field}"]`);
    el.textContent = String(value);
    return el;
  }

  function whyLimit(why) {
    const li = fromTemplate("why-limit");
    li.dataset.limit = why.name;
    li.classList.toggle("blocking", why.blocking);
    for (const field of ["name", "state", "place", "usage"]) setWhy(li, field, why[field]);
    for (const field of ["room", "more"]) setWhy(li, field, why[field]).hidden = !why[field];
    li.querySelector('[data-why="holders"]').replaceChildren(...why.holders.map((holder) => {
      const item = fromTemplate("why-holder");
      item.title = holder.title;
      for (const field of ["holder", "slots", "since", "expires"]) setWhy(item, field, holder[field]);
      return item;
    }));
    return li;
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

  // --- The charts -----------------------------------------------------------------------------

  // Samples are [time (epoch seconds), held, decaying, limit, grants per second, mean wait in
  // seconds], kept when they change; a value holds until the next sample, so the charts are
  // drawn in steps. The last two are over the interval before their sample (null: unknown, or
  // no grant), so each is drawn from one interval before its time; both are computed by the
  // server from the engine's counters.
  const chart = { since: 0, window: 300, interval: 1, now: 0, samples: [] };

  source.addEventListener("history", (event) => {
    const history = JSON.parse(event.data);
    chart.since = history.since;
    chart.window = history.window;
    chart.interval = history.interval;
    chart.samples = history.samples;
    chart.now = chart.samples.length ? chart.samples[chart.samples.length - 1][0] : history.since;
    draw();
  });

  source.addEventListener("sample", (event) => {
    const sample = JSON.parse(event.data);
    const last = chart.samples[chart.samples.length - 1];
    if (!last || last.slice(1).some((value, i) => value !== sample[i + 1])) chart.samples.push(sample);
    chart.now = sample[0];
    const start = chart.now - chart.window;
    while (chart.samples.length > 1 && chart.samples[1][0] <= start) chart.samples.shift();
    draw();
  });

  const SVG = "http://www.w3.org/2000/svg";
  const RIGHT = 10, TOP = 10, BOTTOM = 24;
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

  function perSecond(value) {
    return `${+value.toPrecision(3)}/s`;
  }

  function seconds(value) {
    if (value === 0) return "0";
    if (value < 1) return `${+(value * 1000).toPrecision(3)} ms`;
    return value < 120 ? `${+value.toPrecision(3)} s` : `${+(value / 60).toPrecision(3)} min`;
  }

  // The frame of a chart: its width in pixels, the time span shown and the axes' scales.
  function frame(svg, H, top, LEFT) {
    // Draw in the pixels the chart has, so that text keeps its size at any width.
    const W = Math.max(240, Math.round(svg.getBoundingClientRect().width));
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const span = Math.min(chart.window, Math.max(60, chart.now - chart.since));
    const t0 = chart.now - span;
    return {
      W, H, LEFT, span, t0,
      x: (t) => LEFT + ((Math.max(t, t0) - t0) / span) * (W - LEFT - RIGHT),
      y: (v) => H - BOTTOM - (v / top) * (H - TOP - BOTTOM),
    };
  }

  function axes(f, top, label) {
    const parts = [];
    for (const v of [0, top / 2, top]) {
      parts.push(node("line", { class: "grid", x1: f.LEFT, x2: f.W - RIGHT, y1: f.y(v), y2: f.y(v) }));
      parts.push(node("text", { class: "axis", x: f.LEFT - 6, y: f.y(v) + 4, "text-anchor": "end" }, label(v)));
    }
    parts.push(node("text", { class: "axis", x: f.LEFT, y: f.H - 6 }, ago(f.span)));
    parts.push(node("text", { class: "axis", x: f.W - RIGHT, y: f.H - 6, "text-anchor": "end" }, "now"));
    return parts;
  }

  function placeholder(f, parts, text) {
    parts.push(node("text", { class: "axis", x: f.W / 2, y: f.H / 2, "text-anchor": "middle" }, text));
  }

  function draw() {
    drawOccupancy();
    drawColumns("grants-chart", 4, "grants", perSecond, "no grants yet");
    drawColumns("wait-chart", 5, "wait", seconds, "no waits yet");
  }

  function drawOccupancy() {
    const svg = document.getElementById("chart");
    if (!svg) return;
    const top = niceCeiling(Math.max(1, ...chart.samples.map((p) => Math.max(p[3], p[1] + p[2]))) * 1.1);
    const f = frame(svg, 180, top, 40);
    const points = chart.samples.map((s) => [Math.max(s[0], f.t0), s[1], s[2], s[3]]);
    const parts = axes(f, top, (v) => String(+v.toFixed(2)));
    if (points.length) {
      const end = f.x(chart.now);
      const base = f.y(0).toFixed(1);
      const total = stepPath(points, f.x, f.y, (p) => p[1] + p[2], end);
      const held = stepPath(points, f.x, f.y, (p) => p[1], end);
      const first = f.x(points[0][0]).toFixed(1);
      parts.push(node("path", { class: "area decaying", d: `${total} V${base} H${first} Z` }));
      parts.push(node("path", { class: "area held", d: `${held} V${base} H${first} Z` }));
      parts.push(node("path", { class: "line total", d: total }));
      parts.push(node("path", { class: "line limit", d: stepPath(points, f.x, f.y, (p) => p[3], end) }));
    } else {
      placeholder(f, parts, "collecting samples…");
    }
    svg.replaceChildren(...parts);
    svg.dataset.samples = String(chart.samples.length);
  }

  // One column per sample whose value (at `index`) is above 0, from one interval before its
  // time to one interval before the next sample's (the last to now).
  function drawColumns(id, index, kind, label, empty) {
    const svg = document.getElementById(id);
    if (!svg) return;
    const values = chart.samples.map((s) => s[index]).filter((v) => v !== null);
    const peak = Math.max(0, ...values);
    const top = peak > 0 ? niceCeiling(peak * 1.1) : 1;
    const f = frame(svg, 130, top, 60);
    const parts = axes(f, top, label);
    let columns = 0;
    chart.samples.forEach((s, i) => {
      const v = s[index];
      if (v === null || v <= 0) return;
      const next = chart.samples[i + 1];
      const from = f.x(s[0] - chart.interval), to = f.x(next ? next[0] - chart.interval : chart.now);
      if (to <= from) return;
      parts.push(node("rect", {
        class: `column ${kind}`, x: from.toFixed(1), width: (to - from).toFixed(1),
        y: f.y(v).toFixed(1), height: (f.y(0) - f.y(v)).toFixed(1),
      }, undefined));
      columns += 1;
    });
    if (!chart.samples.length) placeholder(f, parts, "collecting samples…");
    else if (!columns) placeholder(f, parts, empty);
    svg.replaceChildren(...parts);
    svg.dataset.samples = String(chart.samples.length);
    svg.dataset.peak = String(peak);
  }
})();
