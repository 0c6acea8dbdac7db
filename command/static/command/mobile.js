// The grid worker's phone page: report with GPS, category and photos (kept in the IndexedDB outbox
// while offline, sent with their Idempotency-Key when the network returns), my reports and their
// status (the server's list, from any device, merged with the outbox's), verification tasks and
// warnings for my grids. Live over /ws/stream/ (stream.js).

import { Outbox } from "./outbox.js";
import { Stream } from "./stream.js";
import {
  api, apiAll, announce, ask, Bell, clock, config, csrfToken, el, errorText, field, label, showConnection,
  statusBadge, t, toast,
} from "./ui.js";

const CFG = config();
const USER = CFG.user.username;
const MY_GRIDS = new Set(CFG.grids.map((g) => g.code));
const store = (name) => `yjld.m.${CFG.user.id}.${name}`;
const MINE_PAGE = 100; // "my reports": the newest this many from the server, plus the outbox
// mine: incidents holding a report of this user, from GET incidents/?reporter=me (any device).
const state = { categories: [], incidents: new Map(), tasks: new Map(), warnings: new Map(), records: [], mine: new Map() };

function remember(name, value) {
  try {
    localStorage.setItem(store(name), JSON.stringify(value));
  } catch {
    /* full or private: only offline comfort is lost */
  }
}

function recall(name, fallback) {
  try {
    return JSON.parse(localStorage.getItem(store(name))) ?? fallback;
  } catch {
    return fallback;
  }
}

// ------------------------------------------------------------------------------------ the form

const form = document.getElementById("report-form");
const categorySelect = document.getElementById("category");
const gpsStatus = document.getElementById("gps-status");
const photoInput = document.getElementById("photos");
const formError = document.getElementById("form-error");

function fillCategories(categories) {
  state.categories = categories;
  const families = categories.filter((c) => !c.parent_code);
  const keep = categorySelect.value;
  categorySelect.replaceChildren(categorySelect.options[0]);
  for (const family of families) {
    const group = el("optgroup", { label: family.name });
    categories.filter((c) => c.parent_code === family.code).forEach((c) => group.append(el("option", { value: c.code }, c.name)));
    categorySelect.append(group);
  }
  categorySelect.value = keep;
}

function categoryName(code) {
  const found = state.categories.find((c) => c.code === code);
  return found ? found.name : code;
}

function locate() {
  if (!navigator.geolocation) {
    gpsStatus.textContent = t("no_gps", { why: "—" });
    return;
  }
  gpsStatus.textContent = t("locating");
  navigator.geolocation.getCurrentPosition(
    async (position) => {
      const { longitude, latitude, accuracy } = position.coords;
      document.getElementById("lon").value = longitude.toFixed(6);
      document.getElementById("lat").value = latitude.toFixed(6);
      gpsStatus.textContent = t("located", { m: Math.round(accuracy) });
      if (!navigator.onLine) return;
      // Phones report WGS-84 (GPS); tell the worker which grid that is, when the network allows.
      const result = await api(`geocode/?lon=${longitude}&lat=${latitude}&crs=wgs84`).catch(() => null);
      if (result && result.ok) gpsStatus.textContent = `${t("located", { m: Math.round(accuracy) })} · ${t("geocoded", { grid: result.data.grid.name })}`;
      else if (result && result.status === 422) gpsStatus.textContent = `${t("located", { m: Math.round(accuracy) })} · ${t("outside")}`;
    },
    (error) => {
      gpsStatus.textContent = t("no_gps", { why: error.message || error.code });
    },
    { enableHighAccuracy: true, timeout: 15000, maximumAge: 30000 },
  );
}
document.getElementById("locate").addEventListener("click", locate);

photoInput.addEventListener("change", () => {
  const thumbs = document.getElementById("thumbs");
  thumbs.replaceChildren();
  formError.textContent = "";
  const files = [...photoInput.files];
  if (files.length > CFG.photo_max_count) formError.textContent = t("photos_n", { n: `≤ ${CFG.photo_max_count}` });
  for (const file of files) {
    if (file.size > CFG.photo_max_bytes) formError.textContent = t("too_big", { mb: Math.round(CFG.photo_max_bytes / 1048576) });
    const url = URL.createObjectURL(file);
    thumbs.append(el("img", { src: url, alt: file.name, onload: () => URL.revokeObjectURL(url) }));
  }
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const lon = parseFloat(document.getElementById("lon").value);
  const lat = parseFloat(document.getElementById("lat").value);
  const files = [...photoInput.files];
  let problem = "";
  let focus = null;
  if (!categorySelect.value) [problem, focus] = [t("need_category"), categorySelect];
  else if (!form.description.value.trim()) [problem, focus] = [t("need_description"), form.description];
  else if (!Number.isFinite(lon) || !Number.isFinite(lat)) [problem, focus] = [t("need_position"), document.getElementById("locate")];
  else if (files.length > CFG.photo_max_count || files.some((f) => f.size > CFG.photo_max_bytes)) [problem, focus] = [formError.textContent || t("too_big", { mb: Math.round(CFG.photo_max_bytes / 1048576) }), photoInput];
  formError.textContent = problem;
  if (problem) {
    focus.focus();
    return;
  }
  const fields = {
    category: categorySelect.value,
    description: form.description.value.trim(),
    lon,
    lat,
    crs: "wgs84",
    address: form.address.value.trim(),
    // When it happened, not when the network came back.
    occurred_at: new Date().toISOString(),
  };
  const record = await outbox.add(fields, files);
  form.reset();
  document.getElementById("thumbs").replaceChildren();
  gpsStatus.textContent = "";
  document.getElementById("lon").value = fields.lon;
  document.getElementById("lat").value = fields.lat;
  if (!navigator.onLine) toast(t("saved_offline"));
  announce(navigator.onLine ? t("sending") : t("saved_offline"));
  document.querySelector(`[data-key="${record.key}"]`)?.scrollIntoView({ block: "nearest" });
});

// --------------------------------------------------------------------------------- the outbox

async function sendReport(record) {
  const body = new FormData();
  for (const [key, value] of Object.entries(record.fields)) body.append(key, value);
  record.photos.forEach((photo) => body.append("photos", photo.blob, photo.name));
  const response = await fetch(`${CFG.api}reports/`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Idempotency-Key": record.key, "X-CSRFToken": csrfToken(), Accept: "application/json" },
    body,
  });
  const data = await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data };
}

const outbox = new Outbox({ user: USER, send: sendReport, onChange: () => scheduleMine() });

let mineTimer = null;
function scheduleMine() {
  clearTimeout(mineTimer);
  mineTimer = setTimeout(renderMine, 30);
}

function syncText(record) {
  if (record.state === "queued") return record.error === "server" ? t("server_error") : t("queued");
  if (record.state === "sending") return t("sending");
  if (record.state === "sent") return t("sent");
  return t("failed");
}

function failedWhy(record) {
  if (record.error === "auth") return t("sign_in_again");
  // The server names the problem (in English); outside-the-territory is the common one on a phone.
  return record.status === 422 ? `${t("outside")}: ${record.error}` : record.error;
}

/** The server's incident with what the live events have said since. */
function liveIncident(incident) {
  const live = { ...incident, ...(state.mine.get(incident.id) || {}), ...(state.incidents.get(incident.id) || {}) };
  return { ...live, category: incident.category ?? live.category };
}

function incidentCategory(incident) {
  return typeof incident.category === "object" && incident.category ? incident.category.name : categoryName(incident.category);
}

function recordItem(r) {
  const incident = r.incident ? liveIncident(r.incident) : null;
  const photos = r.photos.length || r.photo_count || 0;
  return el("li", { class: `item report sync-state-${r.state}`, "data-key": r.key, "data-state": r.state, "data-incident": incident ? incident.id : null },
    el("div", { class: "head" },
      el("strong", { class: "grow" }, categoryName(r.fields.category)),
      el("span", { class: `sync sync-${r.state}`, role: "status" }, syncText(r))),
    r.state === "failed" ? el("p", { class: "error why" }, failedWhy(r)) : null,
    el("p", {}, r.fields.description),
    el("p", { class: "muted" }, clock(r.created_at), photos ? ` · ${t("photos_n", { n: photos })}` : "",
      incident ? [" · ", el("span", { class: "code" }, incident.code), " "] : null,
      incident ? statusBadge(incident.status) : null),
    r.state === "failed"
      ? el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => outbox.retry(r.key) }, t("retry")),
        el("button", { type: "button", class: "secondary", onclick: () => outbox.remove(r.key) }, t("delete")))
      : null);
}

// A report that this phone did not send (another device, or an outbox since cleared): the server's.
function serverItem(i) {
  const incident = liveIncident(i);
  return el("li", { class: "item report from-server", "data-incident": incident.id, "data-source": "server" },
    el("div", { class: "head" }, el("strong", { class: "grow" }, incidentCategory(incident))),
    el("p", {}, incident.description || ""),
    el("p", { class: "muted" }, clock(incident.occurred_at || incident.reported_at), " · ",
      el("span", { class: "code" }, incident.code), " ", statusBadge(incident.status)));
}

async function renderMine() {
  const records = await outbox.list();
  state.records = records;
  // The outbox's records first claim their incidents (a sent one keeps its key and photo count);
  // the server's list adds every other incident of mine, so reports from another device show too.
  const claimed = new Set(records.filter((r) => r.incident).map((r) => r.incident.id));
  const entries = [
    ...records.map((r) => ({ at: Date.parse(r.created_at) || 0, node: () => recordItem(r) })),
    ...[...state.mine.values()].filter((i) => !claimed.has(i.id))
      .map((i) => ({ at: Date.parse(i.occurred_at || i.reported_at) || 0, node: () => serverItem(i) })),
  ].sort((a, b) => b.at - a.at);
  document.getElementById("count-mine").textContent = entries.length;
  const list = document.getElementById("mine-list");
  if (!entries.length) {
    list.replaceChildren(el("li", { class: "empty" }, t("no_reports")));
    return;
  }
  list.replaceChildren(...entries.map((e) => e.node()));
}

function setMine(rows) {
  state.mine = new Map(rows.map((i) => [i.id, i]));
  // Kept for the next offline start: only what the list shows.
  remember("mine", rows.map((i) => ({
    id: i.id, code: i.code, status: i.status, category: i.category, description: (i.description || "").slice(0, 300),
    occurred_at: i.occurred_at, reported_at: i.reported_at,
  })));
}

async function loadMine() {
  // Newest first; a failure (offline) keeps the list this page last saw.
  const result = await api(`incidents/?reporter=me&page_size=${MINE_PAGE}`).catch(() => null);
  if (result && result.ok) setMine(result.data.results);
  scheduleMine();
}

let mineReload = null;
function scheduleMineReload() {
  clearTimeout(mineReload);
  mineReload = setTimeout(loadMine, 500);
}

// ------------------------------------------------------------------------------ verification

function renderTasks() {
  const tasks = [...state.tasks.values()].filter((i) => i.status === "handled");
  document.getElementById("count-tasks").textContent = tasks.length;
  const list = document.getElementById("task-list");
  if (!tasks.length) {
    list.replaceChildren(el("li", { class: "empty" }, t("no_tasks")));
    return;
  }
  list.replaceChildren(...tasks.map((i) => el("li", { class: "item task", "data-incident": i.id },
    el("div", { class: "head" }, el("strong", { class: "grow" }, `${i.code} · ${typeof i.category === "object" ? i.category.name : categoryName(i.category)}`), statusBadge(i.status)),
    el("p", {}, i.description || ""),
    el("p", { class: "muted" }, i.address || i.territory?.grid?.name || ""),
    el("div", { class: "actions" },
      el("button", { type: "button", class: "act-verify", onclick: () => verify(i, "verify") }, label("actions", "verify")),
      el("button", { type: "button", class: "secondary", onclick: () => verify(i, "reject_verification") }, label("actions", "reject_verification"))))));
}

async function verify(incident, action) {
  let payload = { action };
  if (action === "reject_verification") {
    const answer = await ask({
      title: `${label("actions", action)} · ${incident.code}`,
      body: [field(t("reason"), el("textarea", { name: "reason", rows: 3, required: true }))],
      validate: (f) => (f.reason.value.trim() ? "" : t("reason_required")),
    });
    if (!answer) return;
    payload = { action, reason: answer.get("reason").trim() };
  }
  const result = await api(`incidents/${incident.id}/actions/`, { method: "POST", body: payload }).catch(() => null);
  if (!result || !result.ok) {
    toast(errorText(result), "error");
    return;
  }
  state.tasks.set(incident.id, result.data);
  renderTasks();
  announce(`${incident.code} · ${label("status", result.data.status)}`);
}

// ---------------------------------------------------------------------------------- warnings

function renderWarnings() {
  const warnings = [...state.warnings.values()].filter((w) => ["issued", "updated"].includes(w.status));
  document.getElementById("count-warnings").textContent = warnings.length;
  remember("warnings", warnings);
  const list = document.getElementById("warning-list");
  if (!warnings.length) {
    list.replaceChildren(el("li", { class: "empty" }, t("no_warnings")));
    return;
  }
  list.replaceChildren(...warnings.map((w) => {
    const unread = !(w.my_receipt && w.my_receipt.read_at);
    return el("li", { class: `item warning-item level-${w.level}${unread ? " unread" : ""}`, "data-warning": w.id },
      el("div", { class: "head" }, el("span", { class: `level level-${w.level}` }, label("warning_levels", w.level)), el("strong", { class: "grow" }, w.headline)),
      el("p", { class: "muted" }, `${w.type} · ${w.area_desc || ""} · ${clock(w.effective)} – ${clock(w.expires)}`),
      w.description ? el("p", {}, w.description) : null,
      w.instructions ? el("p", { class: "warn" }, w.instructions) : null,
      el("div", { class: "actions" },
        unread ? el("button", { type: "button", onclick: () => markRead(w) }, label("actions", "read")) : el("span", { class: "muted" }, t("read_done")),
        el("a", { href: `/command/warnings/${w.id}/` }, t("details"))));
  }));
}

async function loadWarning(id) {
  const result = await api(`warnings/${id}/`).catch(() => null);
  if (result && result.ok) state.warnings.set(id, result.data);
  else if (result && result.status === 404) state.warnings.delete(id);
  renderWarnings();
}

async function markRead(warning) {
  const result = await api(`warnings/${warning.id}/actions/`, { method: "POST", body: { action: "read" } }).catch(() => null);
  if (result && result.ok) {
    state.warnings.set(warning.id, result.data);
    renderWarnings();
  } else {
    // The receipt can also travel over the stream (warning.read); only if both fail is it an error.
    const viaStream = await stream.read(warning.id).then(() => true, () => false);
    if (viaStream) await loadWarning(warning.id);
    else toast(errorText(result), "error");
  }
}

// ------------------------------------------------------------------------------ state, events

async function loadState() {
  const [categories, incidents, warnings, mine] = await Promise.all([
    api("categories/").catch(() => null),
    apiAll("incidents/?page_size=200", 1000).catch(() => null),
    api("warnings/?live=1&page_size=50").catch(() => null),
    api(`incidents/?reporter=me&page_size=${MINE_PAGE}`).catch(() => null),
  ]);
  if (mine && mine.ok) setMine(mine.data.results);
  if (categories && categories.ok) {
    fillCategories(categories.data);
    remember("categories", categories.data);
  }
  if (incidents) {
    state.incidents.clear();
    state.tasks.clear();
    for (const i of incidents) {
      state.incidents.set(i.id, i);
      if (i.status === "handled" && MY_GRIDS.has(i.territory?.grid?.code)) state.tasks.set(i.id, i);
    }
  }
  if (warnings && warnings.ok) {
    state.warnings.clear();
    await Promise.all(warnings.data.results.map((w) => loadWarning(w.id)));
  }
  renderTasks();
  renderWarnings();
  renderMine();
  outbox.flush();
  document.body.dataset.loaded = "true";
}

function onEvent(message, { known }) {
  const data = message.data;
  if (message.event.startsWith("incident.")) {
    if (known) return;
    const old = state.incidents.get(data.id) || {};
    const incident = { ...old, ...data, category: old.category || data.category };
    state.incidents.set(data.id, incident);
    if (MY_GRIDS.has(data.grid_code) && data.status === "handled") {
      state.tasks.set(data.id, incident);
      api(`incidents/${data.id}/`).then((r) => {
        if (r.ok && state.tasks.has(data.id)) {
          state.tasks.set(data.id, { ...r.data, status: state.tasks.get(data.id).status });
          renderTasks();
        }
      }).catch(() => {});
      bell.ring(false);
    } else if (state.tasks.has(data.id)) {
      state.tasks.delete(data.id);
    }
    renderTasks();
    if (state.mine.has(data.id) || state.records.some((r) => r.incident && r.incident.id === data.id)) {
      renderMine();
      announce(`${data.code} · ${label("status", data.status)}`);
    } else if (message.event === "incident.created" || data.action === "merged_in") {
      // Perhaps reported on another device, or a report of mine merged into it: ask the server.
      scheduleMineReload();
    }
  } else if (message.event.startsWith("warning.")) {
    if (known) return;
    loadWarning(data.id);
    if (message.event === "warning.issued") {
      bell.ring(data.level === "red" || data.level === "orange");
      if (navigator.vibrate) navigator.vibrate([200, 100, 200]);
      toast(`${t("new_warning")}: ${data.headline}`);
    }
  }
}

// ----------------------------------------------------------------------------------- start up

fillCategories(recall("categories", []));
recall("warnings", []).forEach((w) => state.warnings.set(w.id, w));
recall("mine", []).forEach((i) => state.mine.set(i.id, i));
renderWarnings();
renderMine();
const bell = new Bell(document.getElementById("sound"));
const stream = new Stream({
  userId: CFG.user.id,
  url: CFG.stream,
  onState: (s) => {
    showConnection(s);
    if (s === "live") outbox.flush();
  },
  onLoad: loadState,
  onEvent,
}).start();

document.querySelectorAll(".tabs a").forEach((a) => a.addEventListener("click", () => {
  document.querySelectorAll(".tabs a").forEach((b) => b.setAttribute("aria-current", String(a === b)));
}));

if (navigator.permissions && navigator.geolocation) {
  navigator.permissions.query({ name: "geolocation" }).then((p) => p.state === "granted" && locate()).catch(() => {});
}

if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register(CFG.sw_url, { scope: new URL(".", new URL(CFG.sw_url, location.href)).pathname }).catch((error) => console.warn("service worker", error));
}
