// Small helpers shared by the three consoles: config and strings, REST calls, DOM building,
// times and countdowns, the alert sound, dialogs and the connection indicator.

let CONFIG = null;

/** The page's configuration (user, translated strings, labels), rendered by the server. */
export function config() {
  if (!CONFIG) CONFIG = JSON.parse(document.getElementById("console-config").textContent);
  return CONFIG;
}

/** A translated string, with {name} placeholders filled from vars. */
export function t(key, vars = {}) {
  const template = config().strings[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

export function label(table, key) {
  return (config()[table] || {})[key] || key || "—";
}

function cookie(name) {
  const found = document.cookie.split("; ").find((row) => row.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

export function csrfToken() {
  return cookie("csrftoken") || document.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
}

/** The API's error message, or a generic one. */
export function errorText(result) {
  const error = result && result.data && result.data.error;
  if (error) return error.detail || `${result.status}`;
  return result && result.status ? `${t("error")} ${result.status}` : t("network_error");
}

/**
 * fetch a path of the REST API: resolves {ok, status, data}; rejects only when the network fails.
 * body: an object (sent as JSON) or FormData (multipart).
 */
export async function api(path, { method = "GET", body, headers = {}, signal } = {}) {
  const url = path.startsWith("/") ? path : config().api + path;
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers }, signal };
  if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await response.json().catch(() => null);
  return { ok: response.ok, status: response.status, data };
}

/** Every row of a cursor-paginated list (following `next`), up to `limit` rows. */
export async function apiAll(path, limit = 5000) {
  const rows = [];
  let url = path;
  while (url && rows.length < limit) {
    const result = await api(url);
    if (!result.ok) throw Object.assign(new Error(errorText(result)), { result });
    const page = result.data;
    if (Array.isArray(page)) return page;
    rows.push(...page.results);
    url = page.next ? new URL(page.next, window.location.href).pathname + new URL(page.next, window.location.href).search : null;
  }
  return rows;
}

/** el("button", {class: "x", onclick: f, "aria-label": "…"}, "text", child, …) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's children, skipping null/false/undefined (replaceChildren would print "null"). */
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function gradeBadge(grade) {
  const text = grade ? label("grades", grade) : t("ungraded");
  return el("span", { class: `badge grade grade-${grade || "none"}` }, text);
}

export function statusBadge(status, table = "status") {
  return el("span", { class: `badge status status-${status}` }, label(table, status));
}

export function pad(n) {
  return String(n).padStart(2, "0");
}

/** 3725 → "1:02:05", 65 → "01:05". */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h >= 48) return `${Math.floor(h / 24)}d ${h % 24}h`;
  return h ? `${h}:${pad(m)}:${pad(rest)}` : `${pad(m)}:${pad(rest)}`;
}

export function clock(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const today = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === today.toDateString() ? time : `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** Text and class of a countdown to `dueIso`. */
export function countdown(dueIso, now = Date.now()) {
  if (!dueIso) return { text: t("no_deadline"), overdue: false, soon: false };
  const left = (new Date(dueIso).getTime() - now) / 1000;
  if (left < 0) return { text: t("overdue_by", { t: duration(-left) }), overdue: true, soon: false };
  return { text: t("minutes_left", { t: duration(left) }), overdue: false, soon: left < 300 };
}

/** A countdown element (kept live by startCountdowns), red from the start when already late. */
export function dueNode(tag, dueIso, overdue, attrs = {}) {
  const c = countdown(dueIso);
  const late = c.overdue || !!overdue;
  const cls = [attrs.class || "due", late ? "overdue" : "", c.soon ? "soon" : ""].filter(Boolean).join(" ");
  return el(tag, { ...attrs, class: cls, "data-due": dueIso || "", "data-overdue": String(!!overdue) }, c.text);
}

/** Elements with data-due="<iso>" show a live countdown (one timer for the page, no network). */
export function startCountdowns(root = document) {
  const tick = () => {
    const now = Date.now();
    for (const node of root.querySelectorAll("[data-due]")) {
      const c = countdown(node.dataset.due || null, now);
      if (node.textContent !== c.text) node.textContent = c.text;
      node.classList.toggle("overdue", c.overdue || node.dataset.overdue === "true");
      node.classList.toggle("soon", c.soon);
    }
  };
  tick();
  return setInterval(tick, 1000);
}

export function distanceM(lon1, lat1, lon2, lat2) {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(a));
}

// ------------------------------------------------------------------------------------- announcements

/** Say something to screen readers (and show it briefly). */
export function announce(text, { assertive = false } = {}) {
  const region = document.getElementById(assertive ? "sr-alert" : "sr-status");
  if (region) {
    region.textContent = "";
    // A fresh text node after a tick makes screen readers read it even when it repeats.
    setTimeout(() => (region.textContent = text), 30);
  }
}

export function toast(text, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

// ------------------------------------------------------------------------------------------- sound

/**
 * The alert sound: a few beeps from WebAudio (no audio file to fetch or cache). Browsers only let a
 * page make sound after a user gesture; until then the sound button offers to turn it on.
 */
export class Bell {
  constructor(button) {
    this.button = button;
    this.context = null;
    this.rings = 0;
    const unlock = () => this.unlock();
    window.addEventListener("pointerdown", unlock, { once: true });
    window.addEventListener("keydown", unlock, { once: true });
    if (button) button.addEventListener("click", () => this.unlock());
    // Only after a gesture (or when the page was already used): else the browser refuses and warns.
    if (navigator.userActivation && navigator.userActivation.hasBeenActive) this.unlock();
    else this.show();
  }

  ensure() {
    if (!this.context) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) return null;
      this.context = new Context();
      this.context.onstatechange = () => this.show();
    }
    return this.context;
  }

  unlock() {
    const context = this.ensure();
    if (context && context.state === "suspended") context.resume().catch(() => {});
    this.show();
  }

  show() {
    if (!this.button) return;
    const on = this.context && this.context.state === "running";
    this.button.textContent = on ? t("sound_on") : t("sound_off");
    this.button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  /** Ring: `urgent` plays a longer, higher pattern. The count is on <body data-rings>. */
  ring(urgent = false) {
    this.rings += 1;
    document.body.dataset.rings = String(this.rings);
    const context = this.ensure();
    if (!context) return;
    if (context.state !== "running") {
      // Allowed when the browser's autoplay policy permits it; otherwise the banner has to do.
      context.resume().then(() => this.beep(context, urgent)).catch(() => {});
      return;
    }
    this.beep(context, urgent);
  }

  beep(context, urgent) {
    if (context.state !== "running") return;
    const now = context.currentTime;
    const tones = urgent ? [988, 784, 988, 784, 988] : [880, 660, 880];
    tones.forEach((frequency, i) => {
      const osc = context.createOscillator();
      const gain = context.createGain();
      osc.type = "square";
      osc.frequency.value = frequency;
      const start = now + i * 0.22;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.15, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.19);
      osc.connect(gain).connect(context.destination);
      osc.start(start);
      osc.stop(start + 0.2);
    });
  }
}

// ------------------------------------------------------------------------------------------ dialogs

/**
 * Show a modal <dialog> built from `body` nodes with Confirm / Cancel. `validate(form)` returns an
 * error text or "" ; resolves with the form's FormData, or null when cancelled.
 */
export function ask({ title, body = [], confirm = t("confirm"), validate = () => "", wide = false }) {
  return new Promise((resolve) => {
    const error = el("p", { class: "error", role: "alert" });
    const form = el(
      "form",
      { method: "dialog", class: "dialog-form" },
      el("h2", { id: "dialog-title" }, title),
      ...body,
      error,
      el(
        "div",
        { class: "dialog-buttons" },
        el("button", { type: "button", class: "secondary", value: "cancel", "data-cancel": "" }, t("cancel")),
        el("button", { type: "submit", class: "primary", value: "ok" }, confirm),
      ),
    );
    const dialog = el("dialog", { class: wide ? "wide" : "", "aria-labelledby": "dialog-title" }, form);
    document.body.append(dialog);
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    form.querySelector("[data-cancel]").addEventListener("click", () => finish(null));
    dialog.addEventListener("cancel", () => finish(null));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const problem = validate(form);
      if (problem) {
        error.textContent = problem;
        return;
      }
      finish(new FormData(form));
    });
    dialog.showModal();
    const first = form.querySelector("input:not([type=hidden]), select, textarea");
    if (first) first.focus();
  });
}

export function field(labelText, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return el("div", { class: "field" }, el("label", { for: id }, labelText), control, hint ? el("p", { class: "hint" }, hint) : null);
}

// ------------------------------------------------------------------------------------- connection

/** Show the stream's state in the element with id "conn". */
export function showConnection(state) {
  const node = document.getElementById("conn");
  if (!node) return;
  node.dataset.state = state;
  node.textContent = t(state) || state;
  if (state === "signed_out") {
    node.replaceChildren(el("a", { href: `/login/?next=${encodeURIComponent(window.location.pathname)}` }, t("signed_out")));
  }
}
