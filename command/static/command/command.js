// The command centre: live map, incident queue with accept / register / dispatch / merge, the
// dispatch dialog (rule proposal and recommended units), the overdue board, department presence and
// an alert (sound + banner) for new grade Ⅰ/Ⅱ incidents. State loads once over REST and then follows
// /ws/stream/ (stream.js); nothing polls.

import { Stream } from "./stream.js";
import {
  api, apiAll, announce, ask, Bell, clock, config, distanceM, dueNode, el, errorText, field, fill,
  gradeBadge, label, showConnection, startCountdowns, statusBadge, t, toast,
} from "./ui.js";

const L = window.L;
const CFG = config();
const ACTIVE = ["reported", "accepted", "registered", "dispatched", "in_progress", "handled"];
const PENDING = new Set(["reported", "accepted", "registered"]);
const CLOSED_ORDERS = new Set(["completed", "reassigned", "released"]);
const GRADE_ORDER = { I: 1, II: 2, III: 3, IV: 4 };
const GRADE_COLOR = { I: "#b3261e", II: "#d35400", III: "#c99a00", IV: "#1d5fbf" };
const STATUS_RING = {
  reported: "#ffffff", accepted: "#ffe082", registered: "#ffb74d",
  dispatched: "#12263a", in_progress: "#12263a", handled: "#2e7d32",
};
const WARNING_COLOR = { blue: "#1d5fbf", yellow: "#c99a00", orange: "#d35400", red: "#b3261e" };
// The actions of the queue per status (incidents/rules.py; the server decides, this only offers).
const QUEUE_ACTIONS = {
  reported: ["accept", "merge", "cancel"],
  accepted: ["register", "merge", "cancel"],
  registered: ["dispatch", "merge", "cancel"],
  dispatched: ["dispatch"],
};
// Territory levels, drawn bottom to top; each in its own canvas pane, shown from minZoom on.
const LEVELS = [
  { level: "grid", minZoom: 11, style: { color: "#7d93a8", weight: 0.6, opacity: 0.7, fill: false } },
  { level: "block", minZoom: 14, style: { color: "#2e7d32", weight: 0.8, opacity: 0.8, fillColor: "#2e7d32", fillOpacity: 0.04 } },
  { level: "community", minZoom: 12, style: { color: "#5a7087", weight: 1, dashArray: "4 3", fill: false } },
  { level: "street", minZoom: 10, style: { color: "#3a5a78", weight: 1.6, fill: false } },
  { level: "district", minZoom: 0, style: { color: "#12263a", weight: 2.6, fill: true, fillColor: "#dfe7ee", fillOpacity: 0.35 } },
];

const state = {
  incidents: new Map(),
  orders: new Map(),
  departments: new Map(),
  categories: [],
  units: [],
  online: new Map(), // user id → department code
  warnings: new Map(),
  selected: null,
  filter: "pending",
  search: "",
  alerted: new Set(),
  fresh: new Set(),
};
const metrics = (window.yjldMetrics = { territoryRequests: 0 });

// ------------------------------------------------------------------------------------------- map

const mapNode = document.getElementById("map");
const map = L.map(mapNode, { preferCanvas: true, zoomSnap: 0.25, zoomDelta: 0.5, minZoom: 8, maxZoom: 18 });
map.setView([22.6, 114.05], 11);
if (CFG.map && CFG.map.tile_url) {
  L.tileLayer(CFG.map.tile_url, { attribution: CFG.map.tile_attribution || "", maxZoom: 19 }).addTo(map);
}
const panes = {};
LEVELS.forEach((spec, i) => {
  const pane = map.createPane(`territory-${spec.level}`);
  pane.style.zIndex = String(300 + i);
  pane.style.pointerEvents = "none";
  panes[spec.level] = L.canvas({ pane: `territory-${spec.level}`, padding: 0.3 });
});
map.createPane("warnings").style.zIndex = "390";
map.createPane("units").style.zIndex = "440";
map.createPane("incidents").style.zIndex = "450";
const warningLayer = L.layerGroup().addTo(map);
const unitLayer = L.layerGroup().addTo(map);
const incidentLayer = L.layerGroup().addTo(map);
const incidentRenderer = L.svg({ pane: "incidents" });
const unitRenderer = L.svg({ pane: "units" });
const labelLayer = L.layerGroup().addTo(map);

const territory = {}; // level → {tolerance, layer, loading}
const geojsonCache = new Map(); // `${level}@${tolerance}` → Promise<GeoJSON>

/** Simplification tolerance (m) for a zoom: about one screen pixel, in powers of two. */
function toleranceFor(zoom) {
  const metresPerPixel = (156543.03 * Math.cos((map.getCenter().lat * Math.PI) / 180)) / 2 ** zoom;
  return Math.min(512, Math.max(2, 2 ** Math.floor(Math.log2(metresPerPixel))));
}

function fetchLevel(level, tolerance) {
  const key = `${level}@${tolerance}`;
  if (!geojsonCache.has(key)) {
    metrics.territoryRequests += 1;
    geojsonCache.set(
      key,
      api(`territory/${level}/?simplify=${tolerance}`).then((r) => {
        if (!r.ok) throw new Error(errorText(r));
        return r.data;
      }),
    );
  }
  return geojsonCache.get(key).catch((error) => {
    geojsonCache.delete(key);
    throw error;
  });
}

async function showLevel(spec, zoom) {
  const slot = (territory[spec.level] ||= { tolerance: null, layer: null, want: null });
  if (zoom < spec.minZoom) {
    if (slot.layer) map.removeLayer(slot.layer);
    slot.want = null;
    return;
  }
  const tolerance = toleranceFor(zoom);
  slot.want = tolerance;
  if (slot.layer && slot.tolerance === tolerance) {
    if (!map.hasLayer(slot.layer)) slot.layer.addTo(map);
    return;
  }
  const data = await fetchLevel(spec.level, tolerance);
  if (slot.want !== tolerance) return; // the zoom moved on while this loaded
  const layer = L.geoJSON(data, { renderer: panes[spec.level], interactive: false, style: spec.style });
  if (slot.layer) map.removeLayer(slot.layer); // swap only when the new one is ready: no flicker
  slot.layer = layer.addTo(map);
  slot.tolerance = tolerance;
  if (spec.level === "district") districtLoaded(data);
  if (spec.level === "street") slot.data = data;
}

let fitted = false;
function districtLoaded(data) {
  if (fitted) return;
  fitted = true;
  const bounds = L.geoJSON(data).getBounds();
  if (bounds.isValid()) {
    map.fitBounds(bounds, { padding: [8, 8], animate: false });
    map.setMaxBounds(bounds.pad(0.6));
  }
  data.features.forEach((f) => {
    const center = L.geoJSON(f).getBounds().getCenter();
    L.tooltip({ permanent: true, direction: "center", className: "area-label district-label", interactive: false })
      .setLatLng(center).setContent(f.properties.name).addTo(labelLayer);
  });
}

async function refreshTerritory() {
  const zoom = map.getZoom();
  await Promise.all(LEVELS.map((spec) => showLevel(spec, zoom).catch((e) => toast(`${spec.level}: ${e.message}`, "error"))));
}

async function firstTerritoryPaint() {
  // The initial view comes from the districts' extent; then every level visible at that zoom.
  await showLevel(LEVELS[LEVELS.length - 1], map.getZoom());
  await refreshTerritory();
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  metrics.territoryFirstPaintMs = Math.round(performance.now());
  metrics.territoryLevels = LEVELS.filter((s) => map.getZoom() >= s.minZoom).map((s) => s.level);
  mapNode.dataset.territoryPaintMs = String(metrics.territoryFirstPaintMs);
  mapNode.dataset.territoryReady = "true";
}
map.on("zoomend", async () => {
  const started = performance.now();
  for (const [id, marker] of markers) marker.setRadius(markerStyle(state.incidents.get(id)).radius);
  await refreshTerritory();
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  metrics.zoomRenderMs = Math.round(performance.now() - started);
  metrics.zoom = map.getZoom();
  mapNode.dataset.zoom = String(map.getZoom());
});

map.on("click", async (event) => {
  const { lat, lng } = event.latlng;
  const result = await api(`geocode/?lon=${lng.toFixed(6)}&lat=${lat.toFixed(6)}`).catch(() => null);
  if (!result || !result.ok) return;
  const g = result.data;
  const rows = ["district", "street", "community", "grid", "block"]
    .filter((k) => g[k])
    .map((k) => el("div", {}, `${g[k].name} `, el("span", { class: "muted" }, g[k].code)));
  L.popup().setLatLng(event.latlng).setContent(el("div", { class: "geo-popup" }, ...rows)).openOn(map);
});

// ------------------------------------------------------------------------------ incidents on the map

const markers = new Map();

// Markers shrink when the whole city is in view, so 500 of them do not hide the map.
function markerScale() {
  const zoom = map.getZoom();
  return zoom >= 13 ? 1 : zoom >= 12 ? 0.8 : zoom >= 11 ? 0.6 : 0.45;
}

function markerStyle(incident) {
  const grade = incident.grade;
  return {
    renderer: incidentRenderer,
    radius: (grade === "I" ? 11 : grade === "II" ? 9.5 : grade === "III" ? 8 : 7) * markerScale(),
    fillColor: GRADE_COLOR[grade] || "#6b7785",
    fillOpacity: 0.92,
    color: STATUS_RING[incident.status] || "#12263a",
    weight: PENDING.has(incident.status) ? 3 : 2.5,
    className: `incident-marker inc-${incident.id} st-${incident.status}${PENDING.has(incident.status) ? " fresh" : ""}`,
  };
}

function placeMarker(incident) {
  const existing = markers.get(incident.id);
  if (!ACTIVE.includes(incident.status) || incident.lon == null) {
    if (existing) {
      incidentLayer.removeLayer(existing);
      markers.delete(incident.id);
      mapNode.dataset.incidents = String(markers.size);
    }
    return;
  }
  const style = markerStyle(incident);
  if (existing) {
    existing.setLatLng([incident.lat, incident.lon]);
    existing.setStyle(style);
    const path = existing.getElement && existing.getElement();
    if (path) path.setAttribute("class", `leaflet-interactive ${style.className}`);
    existing.setTooltipContent(markerTip(incident));
    return;
  }
  const marker = L.circleMarker([incident.lat, incident.lon], style)
    .bindTooltip(markerTip(incident), { direction: "top", offset: [0, -6] })
    .on("click", () => select(incident.id, { pan: false }));
  marker.addTo(incidentLayer);
  markers.set(incident.id, marker);
  mapNode.dataset.incidents = String(markers.size);
}

function markerTip(incident) {
  return `${incident.code} · ${categoryName(incident)} · ${label("status", incident.status)}${incident.grade ? ` · ${label("grades", incident.grade)}` : ""}`;
}

function categoryName(incident) {
  const c = incident.category;
  if (c && typeof c === "object") return c.name;
  const found = state.categories.find((x) => x.code === c);
  return found ? found.name : c || "";
}

// ------------------------------------------------------------------------------------------ queue

const queueNode = document.getElementById("queue");
const queueNodes = new Map();
let queueScheduled = false;

function scheduleQueue() {
  if (queueScheduled) return;
  queueScheduled = true;
  requestAnimationFrame(() => {
    queueScheduled = false;
    renderQueue();
  });
}

function visibleInQueue(incident) {
  if (!ACTIVE.includes(incident.status)) return false;
  const pending = PENDING.has(incident.status);
  if ((state.filter === "pending") !== pending) return false;
  if (!state.search) return true;
  const text = `${incident.code} ${incident.address || ""} ${incident.description || ""} ${categoryName(incident)}`.toLowerCase();
  return text.includes(state.search);
}

function queueOrder(a, b) {
  const ga = GRADE_ORDER[a.grade] || 9;
  const gb = GRADE_ORDER[b.grade] || 9;
  if (ga !== gb) return ga - gb;
  const da = a.due_at ? Date.parse(a.due_at) : Infinity;
  const db = b.due_at ? Date.parse(b.due_at) : Infinity;
  if (da !== db) return da - db;
  return b.id - a.id;
}

function ordersOf(incidentId) {
  return [...state.orders.values()].filter((o) => o.incident_id === incidentId && o.status !== "reassigned");
}

function signature(incident) {
  const orders = ordersOf(incident.id).map((o) => `${o.id}:${o.status}`).join(",");
  return `${incident.status}|${incident.grade}|${incident.due_at}|${incident.overdue}|${orders}|${state.selected === incident.id}|${state.fresh.has(incident.id)}`;
}

function renderQueue() {
  let pending = 0;
  let working = 0;
  const shown = [];
  for (const incident of state.incidents.values()) {
    if (!ACTIVE.includes(incident.status)) continue;
    if (PENDING.has(incident.status)) pending += 1;
    else working += 1;
    if (visibleInQueue(incident)) shown.push(incident);
  }
  document.getElementById("count-pending").textContent = pending;
  document.getElementById("count-working").textContent = working;
  shown.sort(queueOrder);
  const keep = new Set(shown.map((i) => i.id));
  for (const [id, node] of queueNodes) {
    if (!keep.has(id)) {
      node.remove();
      queueNodes.delete(id);
    }
  }
  shown.forEach((incident, index) => {
    let node = queueNodes.get(incident.id);
    if (!node) {
      node = el("li", { class: "incident", "data-id": incident.id });
      queueNodes.set(incident.id, node);
    }
    const sig = signature(incident);
    if (node.dataset.sig !== sig) {
      fillQueueItem(node, incident);
      node.dataset.sig = sig;
    }
    if (queueNode.children[index] !== node) queueNode.insertBefore(node, queueNode.children[index] || null);
  });
  document.getElementById("queue-empty").hidden = shown.length > 0;
}

function fillQueueItem(node, incident) {
  node.className = `incident grade-${incident.grade || "none"}${state.selected === incident.id ? " selected" : ""}${state.fresh.has(incident.id) ? " fresh" : ""}${incident.overdue ? " late" : ""}`;
  node.dataset.status = incident.status;
  const orders = ordersOf(incident.id);
  const actions = (QUEUE_ACTIONS[incident.status] || []).map((action) =>
    el("button", { type: "button", class: `act act-${action}`, "data-action": action, onclick: () => runAction(incident, action) }, label("actions", action)),
  );
  fill(
    node,
    el(
      "button",
      { type: "button", class: "incident-head", "aria-current": state.selected === incident.id ? "true" : null, onclick: () => select(incident.id) },
      el("span", { class: "line" }, gradeBadge(incident.grade), el("strong", { class: "code" }, incident.code), statusBadge(incident.status)),
      el("span", { class: "cat" }, categoryName(incident)),
    ),
    el("p", { class: "where" }, incident.address || incident.territory?.grid?.name || "", incident.description ? ` — ${incident.description}` : ""),
    el(
      "p",
      { class: "meta" },
      el("span", {}, clock(incident.reported_at)),
      dueNode("span", incident.due_at, incident.overdue),
    ),
    orders.length
      ? el("ul", { class: "chips", "aria-label": t("orders") }, orders.map((o) => el("li", { class: `chip order-${o.status}` }, `${deptName(o.department)} · ${label("order_status", o.status)}`)))
      : null,
    actions.length ? el("div", { class: "actions" }, actions) : null,
  );
}

function deptName(code) {
  const d = state.departments.get(typeof code === "object" && code ? code.code : code);
  return d ? d.name : typeof code === "object" && code ? code.name : code;
}

document.querySelectorAll("[data-filter]").forEach((button) => {
  button.addEventListener("click", () => {
    state.filter = button.dataset.filter;
    document.querySelectorAll("[data-filter]").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    renderQueue();
  });
});
document.getElementById("queue-search").addEventListener("input", (event) => {
  state.search = event.target.value.trim().toLowerCase();
  renderQueue();
});

// ---------------------------------------------------------------------------------------- detail

const detailBody = document.getElementById("detail-body");
let detailTimer = null;
let detailData = null;

function select(id, { pan = true } = {}) {
  const previous = state.selected;
  state.selected = id;
  [previous, id].forEach((x) => {
    const node = queueNodes.get(x);
    if (node) node.dataset.sig = "";
  });
  scheduleQueue();
  const incident = state.incidents.get(id);
  if (incident && pan && incident.lat != null && !map.getBounds().pad(-0.15).contains([incident.lat, incident.lon])) {
    map.panTo([incident.lat, incident.lon]);
  }
  const marker = markers.get(id);
  if (marker) marker.openTooltip();
  loadDetail(id);
}

function scheduleDetail() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => state.selected && loadDetail(state.selected), 250);
}

async function loadDetail(id) {
  const [incident, orders] = await Promise.all([api(`incidents/${id}/`), api(`orders/?incident=${id}&page_size=50`)]).catch(() => [null, null]);
  if (state.selected !== id) return;
  if (!incident || !incident.ok) {
    detailBody.replaceChildren(el("p", { class: "error" }, errorText(incident)));
    return;
  }
  detailData = incident.data;
  upsertIncident(detailData);
  if (orders && orders.ok) orders.data.results.forEach((o) => upsertOrder(orderFromBody(o)));
  renderDetail();
}

function renderDetail() {
  const d = detailData;
  if (!d || d.id !== state.selected) return;
  const orders = ordersOf(d.id).sort((a, b) => (a.role === "lead" ? -1 : 1) - (b.role === "lead" ? -1 : 1) || a.id - b.id);
  const territoryLine = ["district", "street", "community", "grid"].map((k) => d.territory?.[k]?.name).filter(Boolean).join(" · ");
  const photos = d.reports.flatMap((r) => r.photos);
  const actions = d.allowed_actions.filter((a) => ["accept", "register", "dispatch", "merge", "cancel"].includes(a));
  fill(
    detailBody,
    el("div", { class: "detail-head" }, gradeBadge(d.grade), el("strong", { class: "code" }, d.code), statusBadge(d.status)),
    el("p", { class: "cat" }, d.category.name),
    el("p", {}, d.description),
    el("dl", { class: "facts" },
      el("dt", {}, t("reports")), el("dd", {}, `${clock(d.reported_at)} · ${t("reports_n", { n: d.reports.length })}`),
      el("dt", {}, t("place")), el("dd", {}, d.address || "—", el("br"), el("span", { class: "muted" }, territoryLine), d.near_boundary ? el("span", { class: "warn" }, ` (${t("near_boundary")})`) : null),
      el("dt", {}, t("deadline")), dueNode("dd", d.due_at, d.overdue, { class: "due-text" }),
    ),
    photos.length ? photoStrip(photos) : null,
    actions.length ? el("div", { class: "actions" }, actions.map((a) => el("button", { type: "button", class: `act act-${a}`, "data-action": a, onclick: () => runAction(d, a) }, label("actions", a)))) : null,
    el("h3", {}, t("orders")),
    orders.length
      ? el("ul", { class: "orders", id: "detail-orders" }, orders.map((o) => el("li", { class: `order order-${o.status}`, "data-order": o.id, "data-department": o.department },
        el("span", { class: "dept" }, deptName(o.department)),
        el("span", { class: "role" }, label("strings", o.role === "lead" ? "lead" : "assist")),
        statusBadge(o.status, "order_status"),
        CLOSED_ORDERS.has(o.status) ? null : dueNode("span", o.due_at, o.overdue),
        (o.photos || []).length ? photoStrip(o.photos, 48) : null)))
      : el("p", { class: "empty" }, t("none")),
    el("details", {}, el("summary", {}, t("timeline")),
      el("ol", { class: "timeline" }, d.timeline.slice(-12).reverse().map((r) => el("li", {}, el("time", {}, clock(r.at)), ` ${r.actor || r.role || ""} · ${r.action}${r.to_status ? ` → ${label("status", r.to_status)}` : ""}${r.reason ? ` (${r.reason})` : ""}`)))),
  );
}

// --------------------------------------------------------------------------------------- actions

async function act(incident, action, payload = {}) {
  let result;
  try {
    result = await api(`incidents/${incident.id}/actions/`, { method: "POST", body: { action, ...payload } });
  } catch {
    toast(t("network_error"), "error");
    return false;
  }
  if (!result.ok) {
    toast(`${incident.code}: ${errorText(result)}`, "error");
    return false;
  }
  upsertIncident(result.data);
  announce(`${incident.code} · ${label("actions", action)} · ${t("saved")}`);
  if (state.selected === incident.id) {
    detailData = result.data;
    scheduleDetail();
  }
  return true;
}

async function runAction(incident, action) {
  if (action === "accept") return act(incident, "accept");
  if (action === "register") return registerDialog(incident);
  if (action === "dispatch") return dispatchDialog(incident);
  if (action === "merge") return mergeDialog(incident);
  if (action === "cancel") return cancelDialog(incident);
  return null;
}

function select_(name, options, selected) {
  return el("select", { name }, options.map(([value, text]) => el("option", { value, selected: value === selected }, text)));
}

async function registerDialog(incident) {
  const current = state.incidents.get(incident.id) || incident;
  const categoryCode = typeof current.category === "object" ? current.category.code : current.category;
  const subcategories = state.categories.filter((c) => c.parent_code);
  const form = await ask({
    title: `${label("actions", "register")} · ${current.code}`,
    body: [
      field(t("grade"), select_("grade", Object.keys(CFG.grades).map((g) => [g, label("grades", g)]), current.grade || "IV")),
      field(t("category"), select_("category", subcategories.map((c) => [c.code, `${c.code} ${c.name}`]), categoryCode)),
    ],
    confirm: label("actions", "register"),
  });
  if (!form) return;
  await act(current, "register", { grade: form.get("grade"), category: form.get("category") });
}

async function cancelDialog(incident) {
  const form = await ask({
    title: `${label("actions", "cancel")} · ${incident.code}`,
    body: [field(t("reason"), el("textarea", { name: "reason", rows: 3, required: true }))],
    validate: (f) => (f.reason.value.trim() ? "" : t("reason_required")),
  });
  if (form) await act(incident, "cancel", { reason: form.get("reason").trim() });
}

async function mergeDialog(incident) {
  const detail = await api(`incidents/${incident.id}/`).catch(() => null);
  const duplicates = new Set(detail && detail.ok ? detail.data.possible_duplicates : []);
  const candidates = [...state.incidents.values()]
    .filter((o) => o.id !== incident.id && ACTIVE.includes(o.status) && o.lat != null)
    .map((o) => ({ o, d: distanceM(incident.lon, incident.lat, o.lon, o.lat) }))
    .sort((a, b) => (duplicates.has(b.o.id) - duplicates.has(a.o.id)) || a.d - b.d)
    .slice(0, 12);
  if (!candidates.length) {
    toast(t("no_merge_targets"));
    return;
  }
  const choices = el("fieldset", { class: "choices" }, el("legend", {}, t("merge_into")),
    candidates.map(({ o, d }, i) => el("label", { class: "choice" },
      el("input", { type: "radio", name: "into", value: o.id, checked: i === 0 }),
      ` ${o.code} · ${categoryName(o)} · ${label("status", o.status)} · ${t("km", { d: (d / 1000).toFixed(2) })}`,
      duplicates.has(o.id) ? el("span", { class: "warn" }, ` (${t("possible_duplicate")})`) : null)));
  const form = await ask({
    title: `${label("actions", "merge")} · ${incident.code}`,
    body: [choices, field(t("reason"), el("input", { name: "reason" }))],
    confirm: label("actions", "merge"),
  });
  if (form) await act(incident, "merge", { into: Number(form.get("into")), reason: form.get("reason") || "" });
}

async function recommendedUnits(incident, departments) {
  // The recommendation API ranks by road time when a network is loaded; else straight line.
  const rows = [];
  for (const code of departments) {
    const result = await api(`incidents/${incident.id}/recommended-units/?k=3&department=${encodeURIComponent(code)}`).catch(() => null);
    if (result && result.ok) {
      rows.push(...result.data.units.map((u) => ({ unit: u.unit, department: u.department.code, distance: u.distance_m, eta: u.eta_s, method: u.method })));
    } else if (result && result.status === 404 && !result.data) {
      // No recommendation endpoint on this server: nearest available units by straight line.
      state.units.filter((u) => u.department === code && u.status === "available" && u.lon != null)
        .map((u) => ({ unit: u, department: code, distance: distanceM(incident.lon, incident.lat, u.lon, u.lat), eta: null }))
        .sort((a, b) => a.distance - b.distance).slice(0, 3).forEach((r) => rows.push(r));
    }
  }
  return rows;
}

async function dispatchDialog(incident) {
  const proposalResult = await api(`incidents/${incident.id}/dispatch-proposal/`).catch(() => null);
  if (!proposalResult || !proposalResult.ok) {
    toast(errorText(proposalResult), "error");
    return;
  }
  const p = proposalResult.data;
  const leadCode = p.lead ? p.lead.code : "";
  const assistCodes = p.assist.filter(Boolean).map((d) => d.code);
  const selectable = [...state.departments.values()].filter((d) => d.kind !== "command_centre").sort((a, b) => a.code.localeCompare(b.code));
  const units = await recommendedUnits(incident, [leadCode, ...assistCodes].filter(Boolean));
  const unitList = units.length
    ? el("ol", { class: "units", id: "recommended-units" }, units.map((u) => el("li", { "data-unit": u.unit.code },
      el("strong", {}, u.unit.name), ` · ${t("km", { d: (u.distance / 1000).toFixed(1) })}`,
      u.eta != null ? ` · ${t("eta_min", { m: Math.max(1, Math.round(u.eta / 60)) })}` : "")))
    : el("p", { class: "empty" }, t("no_units"));
  const assistBox = el("fieldset", { class: "choices assist" }, el("legend", {}, t("assist")),
    assistCodes.length ? null : el("p", { class: "muted" }, t("none")),
    selectable.filter((d) => assistCodes.includes(d.code))
      .map((d) => el("label", { class: "choice" }, el("input", { type: "checkbox", name: "assist", value: d.code, checked: true }), ` ${d.name}`)),
    el("label", { class: "field" }, `+ ${t("assist")}`,
      select_("assist_extra", [["", "—"], ...selectable.filter((d) => !assistCodes.includes(d.code)).map((d) => [d.code, d.name])], "")));
  const form = await ask({
    title: `${label("actions", "dispatch")} · ${incident.code}`,
    wide: true,
    body: [
      el("section", { class: "proposal", id: "dispatch-proposal" },
        el("h3", {}, t("rule")),
        el("p", {}, p.rule && p.rule.name ? p.rule.name : t("no_rule")),
        ...p.unresolved_kinds.map((k) => el("p", { class: "warn" }, t("unresolved", { k })))),
      field(t("lead"), select_("lead", [["", "—"], ...selectable.map((d) => [d.code, d.name])], leadCode)),
      assistBox,
      el("section", { class: "recommended" }, el("h3", {}, t("recommended_units")), unitList),
      field(t("override_reason"), el("input", { name: "reason" })),
    ],
    confirm: label("actions", "dispatch"),
    validate: (f) => {
      const lead = f.lead.value;
      const assists = new Set([...f.querySelectorAll("input[name=assist]:checked")].map((x) => x.value));
      if (f.assist_extra.value) assists.add(f.assist_extra.value);
      const same = lead === leadCode && assists.size === assistCodes.length && assistCodes.every((c) => assists.has(c));
      if (!lead) return t("no_rule");
      return same || f.reason.value.trim() ? "" : t("reason_required");
    },
  });
  if (!form) return;
  const lead = form.get("lead");
  const assists = new Set(form.getAll("assist"));
  if (form.get("assist_extra")) assists.add(form.get("assist_extra"));
  assists.delete(lead);
  const same = lead === leadCode && assists.size === assistCodes.length && assistCodes.every((c) => assists.has(c));
  const payload = same ? {} : { lead, assist: [...assists], reason: form.get("reason").trim() };
  await act(incident, "dispatch", payload);
}

// ------------------------------------------------------------------------------------------ board

const boardBody = document.querySelector("#overdue tbody");
let boardTimer = null;

function scheduleBoard() {
  clearTimeout(boardTimer);
  boardTimer = setTimeout(loadBoard, 400);
}

async function loadBoard() {
  const result = await api("overdue/").catch(() => null);
  if (!result || !result.ok) return;
  const rows = result.data.orders;
  document.getElementById("count-overdue").textContent = rows.length;
  document.getElementById("overdue-empty").hidden = rows.length > 0;
  boardBody.replaceChildren(...rows.map((r) => el("tr", { class: r.awaiting_arbitration ? "arbitration" : "late" },
    el("td", {}, el("button", { type: "button", class: "link", onclick: () => select(r.incident_id) }, r.incident_code)),
    el("td", {}, r.department.name, el("br"), el("span", { class: "muted" }, `${label("stages", r.stage)}${r.escalations ? ` · ${t("escalations", { n: r.escalations })}` : ""}`)),
    el("td", {}, r.awaiting_arbitration
      ? [el("span", { class: "warn" }, t("awaiting_arbitration")), CFG.user.role === "commander" ? arbitrateButtons(r) : null]
      : dueNode("span", r.due_at, true)),
  )));
}

function arbitrateButtons(row) {
  const decide = async (ruling) => {
    const body = [field(t("reason"), el("input", { name: "reason", required: true }))];
    if (ruling === "reassign") {
      const options = [...state.departments.values()].filter((d) => d.kind !== "command_centre").map((d) => [d.code, d.name]);
      body.unshift(field(t("unit"), select_("department", options, row.department.code)));
    }
    const form = await ask({ title: `${t(ruling)} · ${row.incident_code}`, body, validate: (f) => (f.reason.value.trim() ? "" : t("reason_required")) });
    if (!form) return;
    const payload = { action: "arbitrate", ruling, reason: form.get("reason").trim() };
    if (ruling === "reassign") payload.department = form.get("department");
    const result = await api(`orders/${row.order_id}/actions/`, { method: "POST", body: payload }).catch(() => null);
    if (!result || !result.ok) toast(errorText(result), "error");
    scheduleBoard();
  };
  return el("span", { class: "row-actions" },
    el("button", { type: "button", class: "small", onclick: () => decide("uphold") }, t("uphold")),
    el("button", { type: "button", class: "small", onclick: () => decide("reassign") }, t("reassign")));
}

// --------------------------------------------------------------------------------------- presence

// Department staff online per department (grid workers also belong to street offices, but only
// department staff can take orders). presence.changed says who flipped; the role comes from REST.
let presenceTimer = null;
function schedulePresence() {
  clearTimeout(presenceTimer);
  presenceTimer = setTimeout(async () => {
    const result = await api("presence/").catch(() => null);
    if (result && result.ok) setPresence(result.data);
  }, 300);
}

function setPresence(data) {
  state.online.clear();
  data.users.filter((u) => u.role === "department").forEach((u) => state.online.set(u.id, u.department));
  renderPresence();
}

function renderPresence() {
  const counts = new Map();
  for (const department of state.online.values()) if (department) counts.set(department, (counts.get(department) || 0) + 1);
  const departments = [...state.departments.values()].filter((d) => d.kind !== "command_centre");
  departments.sort((a, b) => (counts.get(b.code) || 0) - (counts.get(a.code) || 0) || a.code.localeCompare(b.code));
  const online = departments.filter((d) => counts.get(d.code)).length;
  document.getElementById("count-online").textContent = `${online} / ${departments.length}`;
  fill(document.getElementById("presence"), departments.map((d) => {
    const n = counts.get(d.code) || 0;
    return el("li", { class: n ? "on" : "off", "data-department": d.code },
      el("span", { class: "dot", "aria-hidden": "true" }), d.name, n ? el("span", { class: "muted" }, ` · ${n} ${t("online")}`) : null);
  }));
}

// ---------------------------------------------------------------------------------------- warnings

async function loadWarning(id) {
  const result = await api(`warnings/${id}/?receipts=0`).catch(() => null);
  const old = state.warnings.get(id);
  if (old) warningLayer.removeLayer(old.layer);
  state.warnings.delete(id);
  if (!result || !result.ok) return;
  const w = result.data;
  if (!["issued", "updated"].includes(w.status) || !w.area || !w.area.geojson) return;
  const color = WARNING_COLOR[w.level] || "#b3261e";
  const layer = L.geoJSON(w.area.geojson, {
    pane: "warnings",
    style: { color, weight: 2, dashArray: "6 4", fillColor: color, fillOpacity: 0.12 },
  }).bindTooltip(`${label("warning_levels", w.level)} · ${w.headline}`, { sticky: true });
  layer.on("click", () => window.open(`/command/warnings/${w.id}/`, "_blank"));
  state.warnings.set(id, { body: w, layer: layer.addTo(warningLayer) });
  mapNode.dataset.warnings = String(state.warnings.size);
}

async function loadWarnings() {
  // Warnings in force (issued or updated); their areas come with each warning's detail.
  const result = await api("warnings/?live=1&page_size=100").catch(() => null);
  if (!result || !result.ok) return;
  await Promise.all(result.data.results.map((w) => loadWarning(w.id)));
}

// ------------------------------------------------------------------------------------------ units

const unitMarkers = new Map(); // unit id → circle marker

function unitStyle(unit) {
  return {
    renderer: unitRenderer, radius: 4, weight: 1.5, color: "#ffffff", fillColor: unit.status === "available" ? "#00695c" : "#8d6e63", fillOpacity: 1,
    className: `unit-marker unit-${unit.kind} unit-${unit.id} unit-status-${unit.status}`,
  };
}

function unitTip(unit) {
  return `${unit.name} · ${deptName(unit.department)} · ${label("unit_status", unit.status)}`;
}

/** Draw, move or restyle one unit's marker (tests read data-lon/data-lat/data-status on its path). */
function placeUnit(unit) {
  const existing = unitMarkers.get(unit.id);
  if (unit.lon == null || unit.lat == null) {
    if (existing) unitLayer.removeLayer(existing);
    unitMarkers.delete(unit.id);
    return;
  }
  const style = unitStyle(unit);
  let marker = existing;
  if (marker) {
    marker.setLatLng([unit.lat, unit.lon]);
    marker.setStyle(style);
    marker.setTooltipContent(unitTip(unit));
  } else {
    marker = L.circleMarker([unit.lat, unit.lon], style).bindTooltip(unitTip(unit)).addTo(unitLayer);
    unitMarkers.set(unit.id, marker);
  }
  const path = marker.getElement && marker.getElement();
  if (path) {
    path.setAttribute("class", `leaflet-interactive ${style.className}`);
    path.dataset.unit = unit.code;
    path.dataset.status = unit.status;
    path.dataset.lon = String(unit.lon);
    path.dataset.lat = String(unit.lat);
  }
}

function renderUnits() {
  unitLayer.clearLayers();
  unitMarkers.clear();
  state.units.forEach(placeUnit);
}

/** A `unit.updated` event: move and restyle the unit's marker (an older position never wins). */
function upsertUnit(data) {
  const index = state.units.findIndex((u) => u.id === data.id);
  const old = index >= 0 ? state.units[index] : null;
  if (old && old.position_at && data.position_at && Date.parse(data.position_at) < Date.parse(old.position_at)) return;
  const unit = { ...(old || {}), ...data };
  if (index >= 0) state.units[index] = unit;
  else state.units.push(unit);
  placeUnit(unit);
}

// ------------------------------------------------------------------------------------ state & events

function upsertIncident(body) {
  const old = state.incidents.get(body.id) || {};
  const merged = { ...old, ...body };
  if (body.category && typeof body.category === "string" && typeof old.category === "object") {
    merged.category = old.category.code === body.category ? old.category : body.category;
  }
  state.incidents.set(body.id, merged);
  placeMarker(merged);
  scheduleQueue();
  return merged;
}

function orderFromBody(o) {
  return { id: o.id, incident_id: o.incident.id, incident_code: o.incident.code, department: o.department.code, role: o.role, status: o.status, due_at: o.due_at, overdue: o.overdue, photos: o.photos || [] };
}

/** Thumbnails linking to photos served by the API (only to those who may see them). */
function photoStrip(photos, size = 72) {
  return el("div", { class: "photos" }, photos.map((p, i) => el("a", { href: p.url, target: "_blank", rel: "noopener" },
    el("img", { src: p.url, alt: `${t("photo")} ${i + 1}`, loading: "lazy", width: size, height: size, onerror: (e) => e.target.replaceWith(`${t("photo")} ${i + 1}`) }))));
}

function upsertOrder(order) {
  const old = state.orders.get(order.id) || {};
  state.orders.set(order.id, { ...old, ...order });
}

function severeAlert(incident) {
  if (!["I", "II"].includes(incident.grade) || state.alerted.has(incident.id)) return;
  state.alerted.add(incident.id);
  bell.ring(true);
  const text = `${t("new_severe", { g: label("grades", incident.grade) })}: ${incident.code} ${categoryName(incident)}`;
  const box = document.getElementById("severe-alerts");
  const item = el("div", { class: `severe grade-${incident.grade}`, role: "alert", "data-incident": incident.id },
    el("strong", {}, text),
    el("button", { type: "button", onclick: () => select(incident.id) }, t("view")),
    el("button", { type: "button", class: "secondary", onclick: () => item.remove() }, t("dismiss")));
  box.prepend(item);
}

function onEvent(message, { known }) {
  const data = message.data;
  switch (message.event) {
    case "incident.created":
    case "incident.updated": {
      if (known) return; // already in the REST state loaded after the welcome
      const isNew = !state.incidents.has(data.id);
      const incident = upsertIncident(isNew ? { reported_at: message.at, ...data } : data);
      if (isNew) {
        // The event carries no text or place names: fetch them once for the queue.
        // Only the fields events lack: a late answer must not undo a newer status.
        api(`incidents/${data.id}/`).then((r) => {
          if (!r.ok) return;
          const { address, description, territory, category, reported_at: reportedAt, near_boundary: nearBoundary } = r.data;
          upsertIncident({ id: data.id, address, description, territory, category, reported_at: reportedAt, near_boundary: nearBoundary });
        }).catch(() => {});
      }
      if (message.event === "incident.created") {
        state.fresh.add(data.id);
        setTimeout(() => {
          state.fresh.delete(data.id);
          const node = queueNodes.get(data.id);
          if (node) node.dataset.sig = "";
          scheduleQueue();
        }, 15000);
        announce(`${data.code} ${categoryName(incident)} · ${label("status", data.status)}`);
      }
      severeAlert(incident);
      if (state.selected === data.id) scheduleDetail();
      break;
    }
    case "order.created":
    case "order.updated":
    case "order.overdue": {
      if (known) return;
      upsertOrder({ id: data.id, incident_id: data.incident_id, incident_code: data.incident_code, department: data.department, role: data.role, status: data.status, due_at: data.due_at, overdue: data.overdue || message.event === "order.overdue" });
      const node = queueNodes.get(data.incident_id);
      if (node) node.dataset.sig = "";
      scheduleQueue();
      if (state.selected === data.incident_id) {
        // A progress note or completion may bring photos: the order list of the detail has them.
        if (["progress", "complete"].includes(data.action)) scheduleDetail();
        else renderDetail();
      }
      if (message.event !== "order.created" || data.status === "rejected") scheduleBoard();
      if (data.action && ["sign", "reject"].includes(data.action)) {
        announce(`${data.incident_code} · ${deptName(data.department)} · ${label("order_status", data.status)}`);
      }
      break;
    }
    case "presence.changed":
      if (known) return;
      if (!data.online) {
        state.online.delete(data.user_id);
        renderPresence();
      } else schedulePresence();
      break;
    case "warning.issued":
    case "warning.updated":
    case "warning.cancelled":
      if (known) return;
      loadWarning(data.id);
      break;
    case "unit.updated":
      if (known) return; // GET units/ after the welcome has it
      upsertUnit(data);
      break;
    default:
      break;
  }
}

async function loadState() {
  const [incidents, orders, departments, categories, units, presence] = await Promise.all([
    apiAll(`incidents/?status=${ACTIVE.join(",")}&page_size=200`),
    apiAll("orders/?open=true&page_size=200"),
    api("departments/"),
    api("categories/"),
    api("units/"),
    api("presence/"),
  ]);
  if (departments.ok) departments.data.forEach((d) => state.departments.set(d.code, d));
  if (categories.ok) state.categories = categories.data;
  if (units.ok) state.units = units.data;
  if (presence.ok) setPresence(presence.data);
  state.orders.clear();
  orders.forEach((o) => upsertOrder(orderFromBody(o)));
  const seen = new Set(incidents.map((i) => i.id));
  for (const id of state.incidents.keys()) if (!seen.has(id)) upsertIncident({ ...state.incidents.get(id), status: "closed" });
  incidents.forEach((i) => upsertIncident(i));
  mapNode.dataset.incidents = String(markers.size);
  renderUnits();
  renderPresence();
  loadBoard();
  loadWarnings();
  renderQueue();
  if (state.selected) loadDetail(state.selected);
  metrics.stateLoadedMs = Math.round(performance.now());
  document.body.dataset.loaded = "true";
}

const bell = new Bell(document.getElementById("sound"));
startCountdowns();
firstTerritoryPaint().catch((error) => toast(error.message, "error"));
new Stream({
  userId: CFG.user.id,
  url: CFG.stream,
  onState: showConnection,
  onLoad: () => loadState().catch((error) => toast(error.message, "error")),
  onEvent,
}).start();
