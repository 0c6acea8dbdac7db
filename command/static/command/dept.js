// The department inbox: dispatch orders arrive live with a sound; sign, reject (with a reason),
// depart, arrive, progress and complete (both with photos); a countdown to each deadline, overdue in
// red. Orders load once over REST and then follow /ws/stream/ (stream.js).

import { Stream } from "./stream.js";
import {
  api, apiAll, announce, ask, Bell, clock, config, dueNode, el, errorText, field, fill, gradeBadge, label,
  showConnection, startCountdowns, statusBadge, t, toast,
} from "./ui.js";

const CFG = config();
const FINISHED = new Set(["completed", "reassigned", "released"]);
// What a department may do in each state (command/rules.py; the server decides, this only offers).
const OFFER = {
  issued: ["sign", "reject"],
  delivered: ["sign", "reject"],
  signed: ["depart", "arrive", "progress", "complete"],
  en_route: ["arrive", "progress", "complete"],
  on_scene: ["progress", "complete"],
};
const state = { orders: new Map(), fresh: new Set(), categories: new Map() };
const bell = new Bell(document.getElementById("sound"));

function categoryName(order) {
  const c = order.incident.category;
  if (c && typeof c === "object") return c.name;
  return state.categories.get(c) || c || "";
}

function card(order) {
  const overdue = order.overdue || (order.due_at && Date.parse(order.due_at) < Date.now() && !FINISHED.has(order.status));
  const actions = (order.allowed_actions || OFFER[order.status] || []).filter((a) => a in ACTIONS);
  const incident = order.incident;
  return el("li", {
    class: `order-card grade-${incident.grade || "none"}${overdue ? " overdue" : ""}${state.fresh.has(order.id) ? " fresh" : ""}`,
    "data-order": order.id, "data-status": order.status, id: `order-${order.id}`,
    // Built from the REST body (not only from the event): every field is there.
    "data-full": String(!!order.issued_at),
  },
  el("h3", {}, gradeBadge(incident.grade), el("span", { class: "code" }, incident.code), el("span", {}, categoryName(order)),
    el("span", { class: "muted" }, label("strings", order.role === "lead" ? "lead" : "assist")), statusBadge(order.status, "order_status")),
  FINISHED.has(order.status) || order.status === "rejected"
    ? null
    : dueNode("p", order.due_at, order.overdue, { class: "countdown", role: "timer", "aria-label": label("stages", order.stage) }),
  el("p", { class: "facts" }, incident.address || "", incident.address ? el("br") : null, incident.description || ""),
  el("p", { class: "muted" }, t("issued_at", { t: clock(order.issued_at) }), order.stage ? ` · ${label("stages", order.stage)}` : "",
    order.due_at ? ` · ${t("due_at", { t: clock(order.due_at) })}` : ""),
  order.reject ? el("p", { class: "warn" }, `${label("order_status", "rejected")}: ${order.reject.reason}`) : null,
  (order.photos || []).length
    ? el("div", { class: "photos" }, order.photos.map((p, i) => el("a", { href: p.url, target: "_blank", rel: "noopener" },
      el("img", { src: p.url, alt: `${t("photo")} ${i + 1}`, loading: "lazy", width: 56, height: 56 }))))
    : null,
  actions.length
    ? el("div", { class: "actions" }, actions.map((a) => el("button", { type: "button", class: `act-${a}`, "data-action": a, onclick: () => ACTIONS[a](order) }, label("actions", a))))
    : null);
}

function render() {
  const orders = [...state.orders.values()].sort((a, b) => b.id - a.id);
  const open = orders.filter((o) => !FINISHED.has(o.status));
  const done = orders.filter((o) => FINISHED.has(o.status));
  // Open orders: the most pressing deadline first.
  open.sort((a, b) => (a.due_at ? Date.parse(a.due_at) : Infinity) - (b.due_at ? Date.parse(b.due_at) : Infinity) || b.id - a.id);
  document.getElementById("count-open").textContent = open.length;
  document.getElementById("count-done").textContent = done.length;
  const focused = document.activeElement && document.activeElement.closest("[data-order]");
  const focusKey = focused ? [focused.dataset.order, document.activeElement.dataset.action] : null;
  document.getElementById("open-orders").replaceChildren(...(open.length ? open.map(card) : [el("li", { class: "empty" }, t("no_orders"))]));
  document.getElementById("done-orders").replaceChildren(...done.slice(0, 50).map(card));
  if (focusKey) {
    // Keep keyboard users where they were after a live update redraws the list.
    const again = document.querySelector(`[data-order="${focusKey[0]}"] ${focusKey[1] ? `[data-action="${focusKey[1]}"]` : ""}`);
    if (again) again.focus();
  }
}

function fromEvent(data, old) {
  return {
    ...(old || {}),
    id: data.id,
    incident: old ? old.incident : {
      id: data.incident_id, code: data.incident_code, category: data.category, grade: data.grade,
      address: data.address, description: data.description, lon: data.lon, lat: data.lat,
    },
    department: old ? old.department : { code: data.department },
    role: data.role,
    status: data.status,
    stage: data.stage,
    due_at: data.due_at,
    overdue: !!data.overdue,
    issued_at: old ? old.issued_at : null,
    allowed_actions: OFFER[data.status] || [],
  };
}

async function refresh(id) {
  const result = await api(`orders/${id}/`).catch(() => null);
  if (result && result.ok) {
    state.orders.set(id, result.data);
    render();
  }
}

function ring(order) {
  bell.ring(order.incident.grade === "I" || order.incident.grade === "II");
  const box = document.getElementById("ringing");
  const text = [t("new_order", { code: order.incident.code }), categoryName(order), order.incident.address].filter(Boolean).join(" · ");
  fill(
    box,
    el("strong", {}, text),
    el("button", { type: "button", onclick: () => document.getElementById(`order-${order.id}`)?.scrollIntoView({ behavior: "smooth" }) }, t("view")),
    el("button", { type: "button", onclick: () => (box.hidden = true) }, t("dismiss")),
  );
  box.hidden = false;
  announce(text, { assertive: true });
  state.fresh.add(order.id);
  setTimeout(() => state.fresh.delete(order.id), 20000);
  if (navigator.vibrate) navigator.vibrate([300, 100, 300]);
}

function onEvent(message, { known }) {
  if (!message.event.startsWith("order.")) return;
  const data = message.data;
  if (data.department !== CFG.user.department) return;
  if (known) return; // the REST list loaded after the welcome has it
  const old = state.orders.get(data.id);
  const order = fromEvent(data, old);
  if (message.event === "order.overdue") order.overdue = true;
  state.orders.set(data.id, order);
  render();
  if (message.event === "order.created" && !FINISHED.has(data.status)) ring(order);
  refresh(data.id);
}

// ------------------------------------------------------------------------------------- actions

// payload: an object (sent as JSON) or FormData (multipart, with photos).
async function act(order, action, payload = {}) {
  let body = { action, ...payload };
  if (payload instanceof FormData) {
    body = payload;
    body.set("action", action);
  }
  let result;
  try {
    result = await api(`orders/${order.id}/actions/`, { method: "POST", body });
  } catch {
    toast(t("network_error"), "error");
    return;
  }
  if (!result.ok) {
    toast(`${order.incident.code}: ${errorText(result)}`, "error");
    refresh(order.id);
    return;
  }
  state.orders.set(order.id, result.data);
  render();
  announce(`${order.incident.code} · ${label("order_status", result.data.status)}`);
}

function position(order) {
  const lon = el("input", { name: "lon", inputmode: "decimal", required: true });
  const lat = el("input", { name: "lat", inputmode: "decimal", required: true });
  const status = el("output", { class: "muted" });
  const gps = () => {
    if (!navigator.geolocation) return;
    status.textContent = "…";
    navigator.geolocation.getCurrentPosition(
      (p) => {
        lon.value = p.coords.longitude.toFixed(6);
        lat.value = p.coords.latitude.toFixed(6);
        status.textContent = `±${Math.round(p.coords.accuracy)} m`;
      },
      (e) => (status.textContent = e.message),
      { enableHighAccuracy: true, timeout: 10000, maximumAge: 60000 },
    );
  };
  const fromIncident = () => {
    lon.value = order.incident.lon;
    lat.value = order.incident.lat;
    status.textContent = "";
  };
  gps();
  return [
    el("div", { class: "gps" },
      el("button", { type: "button", class: "small", onclick: gps }, t("use_gps")),
      el("button", { type: "button", class: "small secondary", onclick: fromIncident }, t("use_incident")), status),
    el("div", { class: "row" }, field("lon", lon), field("lat", lat)),
  ];
}

// ------------------------------------------------------------------------------------- photos

const MB = Math.round(CFG.photo_max_bytes / 1048576);

function photoField() {
  const input = el("input", { type: "file", name: "photos", accept: "image/jpeg,image/png,image/webp", capture: "environment", multiple: true });
  return field(t("photos"), input, t("photos_hint", { n: CFG.photo_max_count, mb: MB }));
}

/** The chosen photos of a dialog's form (an empty file input still sends one nameless entry). */
function chosenPhotos(form) {
  return [...(form.photos?.files || [])].filter((file) => file.size > 0);
}

/** Why the chosen photos cannot go (the server checks again, by content), or "". */
function photoProblem(form) {
  const files = chosenPhotos(form);
  if (files.length > CFG.photo_max_count) return t("too_many_photos", { n: CFG.photo_max_count });
  const big = files.find((file) => file.size > CFG.photo_max_bytes);
  return big ? `${big.name}: ${t("too_big", { mb: MB })}` : "";
}

/** The note, as JSON, or as a form with the photos when some were chosen. */
function withPhotos(data, fields) {
  const files = data.getAll("photos").filter((file) => file instanceof File && file.size > 0);
  if (!files.length) return fields;
  const body = new FormData();
  Object.entries(fields).forEach(([key, value]) => body.append(key, value));
  files.forEach((file) => body.append("photos", file, file.name));
  return body;
}

const ACTIONS = {
  sign: (order) => act(order, "sign"),
  depart: (order) => act(order, "depart"),
  reject: async (order) => {
    const categories = Object.entries(CFG.reject_categories);
    const form = await ask({
      title: `${label("actions", "reject")} · ${order.incident.code}`,
      body: [
        field(t("reject_category"), el("select", { name: "category" }, categories.map(([value, text]) => el("option", { value }, text)))),
        field(t("reason"), el("textarea", { name: "reason", rows: 3, required: true })),
      ],
      confirm: label("actions", "reject"),
      validate: (f) => (f.reason.value.trim() ? "" : t("reason_required")),
    });
    if (form) await act(order, "reject", { category: form.get("category"), reason: form.get("reason").trim() });
  },
  arrive: async (order) => {
    const form = await ask({
      title: `${label("actions", "arrive")} · ${order.incident.code}`,
      body: [el("p", {}, t("position")), ...position(order)],
      confirm: label("actions", "arrive"),
      validate: (f) => (Number.isFinite(parseFloat(f.lon.value)) && Number.isFinite(parseFloat(f.lat.value)) ? "" : t("position")),
    });
    if (form) await act(order, "arrive", { lon: parseFloat(form.get("lon")), lat: parseFloat(form.get("lat")) });
  },
  progress: async (order) => {
    const form = await ask({
      title: `${label("actions", "progress")} · ${order.incident.code}`,
      body: [field(t("note"), el("textarea", { name: "note", rows: 3, required: true })), photoField()],
      validate: (f) => (f.note.value.trim() ? photoProblem(f) : t("need_note")),
    });
    if (form) await act(order, "progress", withPhotos(form, { note: form.get("note").trim() }));
  },
  complete: async (order) => {
    const form = await ask({
      title: `${label("actions", "complete")} · ${order.incident.code}`,
      body: [field(t("note"), el("textarea", { name: "note", rows: 3 })), photoField()],
      confirm: label("actions", "complete"),
      validate: photoProblem,
    });
    if (form) await act(order, "complete", withPhotos(form, { note: (form.get("note") || "").trim() }));
  },
};

async function loadState() {
  const [orders, categories] = await Promise.all([apiAll("orders/?page_size=200", 400), api("categories/").catch(() => null)]);
  if (categories && categories.ok) categories.data.forEach((c) => state.categories.set(c.code, c.name));
  state.orders.clear();
  orders.forEach((o) => state.orders.set(o.id, o));
  render();
  document.body.dataset.loaded = "true";
}

startCountdowns();
// Past-deadline cards turn red without waiting for the server's order.overdue.
setInterval(() => {
  for (const node of document.querySelectorAll(".order-card[data-order]")) {
    const due = node.querySelector("[data-due]");
    if (due && due.classList.contains("overdue")) node.classList.add("overdue");
  }
}, 1000);
new Stream({
  userId: CFG.user.id,
  url: CFG.stream,
  onState: showConnection,
  onLoad: () => loadState().catch((error) => toast(error.message, "error")),
  onEvent,
}).start();
