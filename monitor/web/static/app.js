// The operator's page: polls the monitor's read-only JSON API and draws it. No framework, nothing from
// elsewhere; every text from the API goes in through textContent, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NAME = /^[A-Za-z0-9_-]+$/;
const RESERVED = new Set(["counts", "events", "escalations", "status", "totals", "_all"]);
const ALL_ZONES = "_all";

let refreshMs = 2000;
let cameras = [];
const rendered = {};  // what each list last showed: unchanged data is not drawn again (nor its images fetched)

function changed(key, data) {
  const text = JSON.stringify(data);
  if (rendered[key] === text) return false;
  rendered[key] = text;
  return true;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setStatus(text, bad) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("bad", Boolean(bad));
}

function money(value) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(4);
}

function seconds(value) {
  return value === null || value === undefined ? "-" : `${Number(value).toFixed(1)} s`;
}

function formatCounts(perLabel) {
  const parts = Object.entries(perLabel || {}).map(([label, n]) => `${label}=${n}`);
  return parts.length ? parts.join(", ") : "-";
}

// --- tabs ------------------------------------------------------------------------------------------------

function currentTab() {
  const wanted = location.hash.replace("#", "");
  return ["overview", "events", "escalations", "zones"].includes(wanted) ? wanted : "overview";
}

function showTab() {
  const tab = currentTab();
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== tab;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === tab);
  if (tab === "zones") editor.open();
  refresh();
}

// --- overview --------------------------------------------------------------------------------------------

function cameraCard(camera) {
  let card = document.querySelector(`.camera[data-camera="${camera.name}"]`);
  if (card) return card;
  card = el("article", { class: "camera", "data-camera": camera.name },
    el("h2", {}, camera.name, " ", el("span", { class: "badge" })),
    el("div", { class: "camera-body" },
      el("img", { class: "frame", alt: `${camera.name}: latest processed frame` }),
      el("div", { class: "facts" })));
  document.getElementById("cameras").append(card);
  return card;
}

function swapImage(img, url, frame) {
  if (!url || img.dataset.pending === url || img.dataset.url === url) return;
  img.dataset.pending = url;
  const next = new Image();
  next.onload = () => {
    img.src = next.src;
    img.dataset.url = url;
    img.dataset.frame = frame;
    delete img.dataset.pending;
  };
  next.onerror = () => { delete img.dataset.pending; };
  next.src = url;
}

function countsTable(counts) {
  const zones = Object.entries(counts.zones || {});
  const labels = [...new Set([...Object.keys(counts.totals || {}),
    ...zones.flatMap(([, perLabel]) => Object.keys(perLabel))])];
  const head = el("tr", {}, el("th", {}, "zone"), ...labels.map((label) => el("th", {}, label)));
  const row = (zone, perLabel, title) => el("tr", {}, el("th", {}, title),
    ...labels.map((label) => el("td", { "data-zone": zone, "data-label": label },
      perLabel[label] === undefined ? "" : perLabel[label])));
  const rows = zones.map(([zone, perLabel]) => row(zone, perLabel, zone));
  rows.push(row(ALL_ZONES, counts.totals || {}, "whole image"));
  return el("table", { class: "counts" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function cameraFacts(camera) {
  const counts = camera.counts;
  const facts = el("div", { class: "facts" });
  const fact = (name, value, key) => el("div", { class: "fact" }, el("span", { class: "muted" }, name),
    el("span", { "data-fact": key }, value));
  facts.append(
    fact("state", camera.stale ? `${camera.state}, stale` : camera.state, "state"),
    fact("processed", camera.fps === null ? "-" : `${camera.fps.toFixed(1)} fps`, "fps"),
    fact("counts from", camera.count_source || "-", "source"),
    fact("counts ts", counts ? counts.ts : "-", "ts"),
    fact("seq", counts ? counts.seq : "-", "seq"),
    fact("active events", camera.active_events, "active"));
  if (counts) {
    facts.append(countsTable(counts));
    for (const [line, totals] of Object.entries(counts.lines || {})) {
      facts.append(el("p", { class: "line", "data-line": line }, `line ${line}: in ${totals.in}, out ${totals.out}`));
    }
  } else {
    facts.append(el("p", { class: "muted" }, "no counts published yet"));
  }
  facts.append(el("p", { class: "muted small" }, camera.description || "", " ", camera.source));
  return facts;
}

function renderOverview(data) {
  for (const camera of data.cameras) {
    const card = cameraCard(camera);
    const badge = card.querySelector(".badge");
    const health = camera.stale ? "stale" : camera.state;
    badge.textContent = health;
    badge.className = `badge ${health}`;
    card.dataset.seq = camera.counts ? camera.counts.seq : "";
    swapImage(card.querySelector("img.frame"), camera.image, camera.frame);
    card.querySelector(".facts").replaceWith(cameraFacts(camera));
  }
}

// --- events ----------------------------------------------------------------------------------------------

function reviewList(event) {
  const items = (event.model_reviews || []).map((review) => el("li", { class: "review" },
    el("strong", {}, review.real ? "real" : "not real"), ` (${review.model_name || "model"}): `,
    review.note || "", el("span", { class: "muted" },
      ` latency ${seconds(review.latency_s)}, cost ${money(review.cost_estimated)}`)));
  for (const review of event.reviews || []) {
    if (review.source !== "llm") {
      items.push(el("li", { class: "review" }, el("strong", {}, review.real ? "real" : "not real"),
        ` (${review.source}): `, review.note || ""));
    }
  }
  return items.length ? el("ul", { class: "reviews" }, ...items) : el("span", { class: "muted" }, "-");
}

function eventRow(event) {
  const snapshot = event.snapshot
    ? el("a", { href: event.snapshot, target: "_blank", rel: "noopener" },
      el("img", { class: "evidence", src: event.snapshot, alt: `evidence of ${event.id}` }))
    : el("span", { class: "muted" }, "none");
  return el("tr", { "data-event": event.id, "data-rule": event.rule },
    el("td", {}, snapshot),
    el("td", {}, event.rule, el("br"), el("span", { class: "muted" }, event.kind)),
    el("td", {}, event.zone || "-"),
    el("td", {}, event.start),
    el("td", {}, seconds(event.duration_s)),
    el("td", { class: `verdict ${event.verdict}` }, event.verdict),
    el("td", {}, event.end_reason || (event.status === "active" ? "active" : "-")),
    el("td", {}, reviewList(event)));
}

function eventTable(title, events) {
  const head = el("tr", {}, ...["evidence", "rule", "zone", "start", "duration", "verdict", "end", "reviews"]
    .map((name) => el("th", {}, name)));
  const body = events.length ? events.map(eventRow)
    : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "none"))];
  return el("div", {}, el("h3", {}, `${title} (${events.length})`),
    el("table", { class: "list events" }, el("thead", {}, head), el("tbody", {}, ...body)));
}

function renderEvents(data) {
  if (!changed("events", data)) return;
  const lists = Object.entries(data.cameras).map(([camera, events]) =>
    el("div", { class: "camera-events", "data-camera": camera }, el("h2", {}, camera),
      eventTable("Active", events.active), eventTable("Recent", events.recent)));
  document.getElementById("event-lists").replaceChildren(...lists);
}

// --- escalations -----------------------------------------------------------------------------------------

function sideBySide(detector, model) {
  const rows = [["whole image", (detector || {}).totals || {}, ((model || {}).totals) || {}]];
  for (const [zone, perLabel] of Object.entries((detector || {}).zones || {})) {
    rows.push([zone, perLabel, (((model || {}).zones) || {})[zone] || {}]);
  }
  return el("table", { class: "side" }, el("tbody", {}, ...rows.map(([where, mine, theirs]) => {
    const differ = model && formatCounts(mine) !== formatCounts(theirs);
    return el("tr", { class: differ ? "differ" : "" }, el("th", {}, where), el("td", {}, formatCounts(mine)),
      el("td", {}, model ? formatCounts(theirs) : "-"));
  })));
}

function renderEscalations(data) {
  if (!changed("escalations", data)) return;
  const budget = data.budget;
  document.getElementById("budget").textContent = budget
    ? `Cost today ${money(budget.spent_today)} of a daily budget of ${money(budget.daily)} (${money(budget.remaining)} left)`
    : "Escalation is off.";
  const rows = data.escalations.map((item) => el("tr", { "data-camera": item.camera, "data-frame": item.frame },
    el("td", {}, item.ts), el("td", {}, item.camera), el("td", {}, item.reason),
    el("td", { class: `outcome ${item.outcome}` }, item.outcome), el("td", {}, item.decision),
    el("td", {}, sideBySide(item.detector, item.model)), el("td", {}, seconds(item.latency_s)),
    el("td", {}, money(item.cost_estimated)),
    el("td", {}, item.description || item.error || "",
      ...(item.events || []).map((verdict) => el("div", { class: "muted" },
        `${verdict.rule || verdict.id}: ${verdict.real ? "real" : "not real"}: ${verdict.note}`)))));
  const body = document.querySelector("#escalation-table tbody");
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, "none yet"))]));
}

// --- zone editor -----------------------------------------------------------------------------------------

// The daemon's rule (monitor/geometry.py points_in_polygon): even-odd, a point on an edge may fall either way.
function inside(point, polygon) {
  const [x, y] = point;
  let crossings = 0;
  for (let i = 0; i < polygon.length; i++) {
    const [x0, y0] = polygon[i];
    const [x1, y1] = polygon[(i + 1) % polygon.length];
    if ((y0 > y) !== (y1 > y) && x < x0 + (y - y0) * (x1 - x0) / (y1 - y0)) crossings++;
  }
  return crossings % 2 === 1;
}

function side(a, b, p) {
  return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
}

function edgesCross(points) {
  const n = points.length;
  for (let i = 0; i < n; i++) {
    for (let j = i + 2; j < n; j++) {
      if (i === 0 && j === n - 1) continue;
      const [a, b, c, d] = [points[i], points[(i + 1) % n], points[j], points[(j + 1) % n]];
      if (side(a, b, c) * side(a, b, d) < 0 && side(c, d, a) * side(c, d, b) < 0) return [i, j];
    }
  }
  return null;
}

function area(points) {
  let twice = 0;
  points.forEach(([x0, y0], i) => {
    const [x1, y1] = points[(i + 1) % points.length];
    twice += x0 * y1 - x1 * y0;
  });
  return Math.abs(twice) / 2;
}

const editor = {
  data: null,
  points: [],
  dragging: null,

  get kind() { return document.getElementById("editor-kind").value; },
  get name() { return document.getElementById("editor-name").value.trim(); },

  setup() {
    const svg = document.getElementById("editor-svg");
    svg.addEventListener("pointerdown", (event) => this.pointerDown(event));
    svg.addEventListener("pointermove", (event) => this.pointerMove(event));
    svg.addEventListener("pointerup", () => { this.dragging = null; });
    document.getElementById("editor-camera").addEventListener("change", () => { this.points = []; this.load(); });
    document.getElementById("editor-kind").addEventListener("change", () => {
      const name = document.getElementById("editor-name");
      if (name.value === "new_zone" || name.value === "new_line") name.value = this.kind === "line" ? "new_line" : "new_zone";
      this.points = this.kind === "line" ? this.points.slice(0, 2) : this.points;
      this.draw();
    });
    document.getElementById("editor-name").addEventListener("input", () => this.draw());
    document.getElementById("editor-refresh").addEventListener("click", () => this.load());
    document.getElementById("editor-undo").addEventListener("click", () => { this.points.pop(); this.draw(); });
    document.getElementById("editor-clear").addEventListener("click", () => { this.points = []; this.draw(); });
    document.getElementById("editor-copy").addEventListener("click", () => this.copy());
  },

  open() {
    const select = document.getElementById("editor-camera");
    if (select.options.length === 0) {
      for (const camera of cameras) select.append(el("option", { value: camera.name }, camera.name));
    }
    if (!this.data && select.value) this.load();
  },

  async load() {
    const camera = document.getElementById("editor-camera").value;
    if (!camera) return;
    try {
      const data = await getJson(`api/cameras/${encodeURIComponent(camera)}/frame`);
      const img = document.getElementById("editor-image");
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("the frame's image is gone; try a newer frame"));
        img.src = data.image;
      });
      this.data = data;
      this.draw();
    } catch (error) {
      setStatus(String(error.message || error), true);
    }
  },

  imagePoint(event) {
    const svg = document.getElementById("editor-svg");
    const box = svg.getBoundingClientRect();
    const x = (event.clientX - box.left) * this.data.width / box.width;
    const y = (event.clientY - box.top) * this.data.height / box.height;
    return [Math.round(Math.min(Math.max(x, 0), this.data.width - 1)),
      Math.round(Math.min(Math.max(y, 0), this.data.height - 1))];
  },

  pointerDown(event) {
    if (!this.data || event.button !== 0) return;
    event.preventDefault();
    const handle = event.target.closest("[data-point]");
    if (handle) {
      this.dragging = Number(handle.dataset.point);
      document.getElementById("editor-svg").setPointerCapture(event.pointerId);
      return;
    }
    if (this.kind === "line" && this.points.length >= 2) this.points = [];
    this.points.push(this.imagePoint(event));
    this.draw();
  },

  pointerMove(event) {
    if (this.dragging === null || !this.data) return;
    this.points[this.dragging] = this.imagePoint(event);
    this.draw();
  },

  problems() {
    const found = [];
    const name = this.name;
    if (!NAME.test(name)) found.push("the name may use only letters, digits, _ and -");
    if (RESERVED.has(name)) found.push(`${name} is reserved for the MQTT topics`);
    const existing = this.kind === "line" ? this.data.lines : this.data.zones;
    if (existing[name]) found.push(`${name} exists already: the snippet replaces it`);
    const distinct = new Set(this.points.map((p) => p.join(","))).size;
    if (this.kind === "line") {
      if (distinct < 2) found.push("a line needs 2 different points");
      return found;
    }
    if (this.points.length < 3 || distinct < 3) found.push("a zone needs at least 3 different points");
    else if (edgesCross(this.points)) found.push("the outline crosses itself: move a point");
    else if (area(this.points) === 0) found.push("the points are on one line");
    return found;
  },

  yaml() {
    const points = this.points.map(([x, y]) => `[${x}, ${y}]`).join(", ");
    return this.kind === "line" ? `${this.name}:\n  points: [${points}]\n` : `${this.name}:\n  polygon: [${points}]\n`;
  },

  insideCounts() {
    const counts = Object.fromEntries(this.data.labels.map((label) => [label, 0]));
    const polygon = this.points.length >= 3 ? this.points : null;
    const flags = this.data.objects.map((object) => Boolean(polygon) && inside(object.anchor, polygon));
    this.data.objects.forEach((object, i) => { if (flags[i] && object.counted) counts[object.label] += 1; });
    return { counts, flags };
  },

  draw() {
    if (!this.data) return;
    const data = this.data;
    const svg = document.getElementById("editor-svg");
    svg.setAttribute("viewBox", `0 0 ${data.width} ${data.height}`);
    const { counts, flags } = this.kind === "zone" ? this.insideCounts() : { counts: null, flags: [] };
    const shapes = [];
    for (const [name, polygon] of Object.entries(data.zones)) {
      shapes.push(svgEl("polygon", { class: "existing", points: polygon.map((p) => p.join(",")).join(" ") }));
      shapes.push(Object.assign(svgEl("text", { class: "existing-name", x: polygon[0][0] + 4, y: polygon[0][1] + 14 }),
        { textContent: name }));
    }
    for (const [, points] of Object.entries(data.lines)) {
      shapes.push(svgEl("line", { class: "existing", x1: points[0][0], y1: points[0][1], x2: points[1][0], y2: points[1][1] }));
    }
    data.objects.forEach((object, i) => {
      const [x1, y1, x2, y2] = object.box;
      shapes.push(svgEl("rect", { class: "box", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
      const state = !object.counted ? "uncounted" : flags[i] ? "inside" : "outside";
      shapes.push(svgEl("circle", { class: `anchor ${state}`, cx: object.anchor[0], cy: object.anchor[1], r: 5,
        "data-object": i }));
    });
    shapes.push(...this.drawnShape());
    svg.replaceChildren(...shapes);
    this.describe(counts);
  },

  drawnShape() {
    const points = this.points;
    const shapes = [];
    if (this.kind === "zone" && points.length >= 2) {
      shapes.push(svgEl(points.length >= 3 ? "polygon" : "polyline",
        { class: "drawn", points: points.map((p) => p.join(",")).join(" ") }));
    }
    if (this.kind === "line" && points.length === 2) {
      const [[ax, ay], [bx, by]] = points;
      shapes.push(svgEl("line", { class: "drawn", x1: ax, y1: ay, x2: bx, y2: by }));
      const length = Math.hypot(bx - ax, by - ay) || 1;
      const [mx, my] = [(ax + bx) / 2, (ay + by) / 2];
      const [nx, ny] = [-(by - ay) / length, (bx - ax) / length];  // from the left of a->b to its right (y down)
      shapes.push(svgEl("line", { class: "direction", x1: mx - nx * 25, y1: my - ny * 25, x2: mx + nx * 25, y2: my + ny * 25 }));
      shapes.push(Object.assign(svgEl("text", { class: "direction-label", x: mx + nx * 30, y: my + ny * 30 }),
        { textContent: "in" }));
    }
    points.forEach(([x, y], i) => shapes.push(svgEl("circle", { class: "handle", cx: x, cy: y, r: 7, "data-point": i })));
    return shapes;
  },

  describe(counts) {
    const data = this.data;
    document.getElementById("editor-frame").textContent = `${data.camera}, frame ${data.frame} (${data.ts}), ${data.width}x${data.height}`;
    document.getElementById("editor-frame").dataset.frame = data.frame;
    document.getElementById("editor-anchor").textContent = data.anchor === "center" ? "box centre" : "bottom centre (feet)";
    const count = document.getElementById("editor-count");
    if (counts) {
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      count.dataset.count = this.points.length >= 3 ? total : "";
      count.replaceChildren(...Object.entries(counts).map(([label, n]) =>
        el("span", { class: "label-count", "data-label": label }, `${label}: ${n}`)));
    } else {
      count.dataset.count = "";
      count.textContent = "a line counts crossings over time: in is from the left of the first point's view to its right";
    }
    const problems = this.problems();
    document.getElementById("editor-problems").replaceChildren(...problems.map((p) => el("li", {}, p)));
    document.getElementById("editor-where").textContent = `cameras.${data.camera}.${this.kind === "line" ? "lines" : "zones"}`;
    const yaml = document.getElementById("editor-yaml");
    yaml.textContent = this.points.length ? this.yaml() : "";
    yaml.dataset.valid = problems.filter((p) => !p.includes("exists already")).length === 0 ? "yes" : "no";
  },

  copy() {
    const text = document.getElementById("editor-yaml").textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => setStatus("copied"), () => this.select());
    } else {
      this.select();
    }
  },

  select() {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById("editor-yaml"));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
  },
};

// --- polling ---------------------------------------------------------------------------------------------

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const data = await getJson("api/cameras");
    cameras = data.cameras;
    refreshMs = Math.max(200, data.refresh_s * 1000);
    renderOverview(data);
    const tab = currentTab();
    if (tab === "events") renderEvents(await getJson("api/events"));
    if (tab === "escalations") renderEscalations(await getJson("api/escalations"));
    if (tab === "zones") editor.open();
    setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (error) {
    setStatus(`cannot reach the monitor: ${error.message || error}`, true);
  }
  timer = setTimeout(refresh, refreshMs);
}

window.addEventListener("hashchange", showTab);
window.addEventListener("DOMContentLoaded", () => {
  editor.setup();
  showTab();
});
