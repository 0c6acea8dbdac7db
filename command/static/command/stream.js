// The live stream of /ws/stream/ (docs/realtime.md), shared by the three consoles.
//
// One Stream per page. It authenticates by the browser's session cookie, says hello with the last
// sequence number this user's browser processed (kept in localStorage per user), hands every event
// to the page once (events are de-duplicated by seq), acknowledges what it processed, answers a
// resync by asking the page to reload its state over REST, and reconnects with jittered exponential
// backoff. Pages never poll: they load over REST once and then follow the stream.
//
// Events that the page's REST load already reflects are still acknowledged (so an order counts as
// delivered) but flagged `known`: the page's first load happens after the server's `welcome`, so
// everything up to the welcome's `head` is already in the REST answer.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const PING_EVERY_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
const ACK_DELAY_MS = 150;
const ACK_EVERY = 100;

/** localStorage key of the last processed seq of one user. */
export function cursorKey(userId) {
  return `yjld.stream.seq.${userId}`;
}

function readCursor(userId) {
  try {
    const value = parseInt(window.localStorage.getItem(cursorKey(userId)) || "0", 10);
    return Number.isFinite(value) && value > 0 ? value : 0;
  } catch {
    return 0;
  }
}

function writeCursor(userId, seq) {
  try {
    // Several tabs of one user share the key: keep the highest seq any of them processed.
    if (seq > readCursor(userId)) window.localStorage.setItem(cursorKey(userId), String(seq));
  } catch {
    /* private mode or full storage: the in-memory cursor still works for this page */
  }
}

/**
 * new Stream({userId, url, onEvent, onState, onLoad, onWelcome})
 *
 * onLoad(reason) → Promise: (re)load the page's state over REST; called after the first welcome
 *   and after a resync. Events with seq ≤ the head at that moment reach onEvent with known=true.
 * onEvent(event, {seq, known, replay}) : one event, once, in seq order.
 * onState(state, detail) : "connecting" | "live" | "offline" | "reconnecting" | "signed_out" | "revoked".
 */
export class Stream {
  constructor({ userId, url = "/ws/stream/", onEvent, onState, onLoad, onWelcome }) {
    this.userId = userId;
    this.url = url;
    this.onEvent = onEvent || (() => {});
    this.onState = onState || (() => {});
    this.onLoad = onLoad || (() => Promise.resolve());
    this.onWelcome = onWelcome || (() => {});
    this.last = readCursor(userId); // last seq processed by this page (or, at first, by this browser)
    this.known = 0; // events up to here are already in the REST state
    this.loaded = false; // the page's state was loaded (perhaps without the stream)
    this.synced = false; // … and loaded after a welcome, so `known` is right
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.pending = new Map(); // request_id → {resolve, reject, timer}
    this.ackTimer = null;
    this.acked = 0;
    this.pingTimer = null;
    this.pongTimer = null;
    this.retryTimer = null;
    this.state = "";
    window.addEventListener("online", () => this.connectSoon(0));
    window.addEventListener("offline", () => {
      this.setState("offline");
      if (this.ws) this.ws.close(4000, "offline");
    });
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "bye");
  }

  setState(state, detail) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state, detail);
  }

  wsUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}${this.url}`;
  }

  connect() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    if (!navigator.onLine) {
      this.setState("offline");
      this.firstLoadWithoutStream();
      return;
    }
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ws;
    try {
      ws = new WebSocket(this.wsUrl());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (message) => this.receive(ws, message);
    ws.onclose = (event) => this.closed(ws, event);
    ws.onerror = () => {}; // onclose follows and reconnects
    // Without a welcome soon (a half-open network), try again.
    const welcomeTimer = setTimeout(() => {
      if (this.ws === ws && !ws.welcomed) ws.close(4000, "no welcome");
    }, 10000);
    ws.addEventListener("close", () => clearTimeout(welcomeTimer));
  }

  /** When the page opens with no network, load what REST (or the service worker's cache) still gives. */
  firstLoadWithoutStream() {
    if (this.loaded) return;
    this.loaded = true;
    Promise.resolve(this.onLoad("offline")).catch(() => {});
  }

  connectSoon(delay) {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  scheduleReconnect() {
    if (this.stopped) return;
    // Full jitter: a random delay up to an exponentially growing cap spreads a crowd of reconnects.
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    this.attempt += 1;
    this.connectSoon(BACKOFF_MIN_MS / 2 + Math.random() * cap);
  }

  closed(ws, event) {
    if (this.ws !== ws) return;
    this.ws = null;
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
    for (const [, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("connection closed"));
    }
    this.pending.clear();
    if (event.code === 4401) {
      this.setState("signed_out");
      return; // a new session is needed: reconnecting would only be refused again
    }
    if (event.code === 4403) {
      this.setState("revoked");
      return;
    }
    this.setState(navigator.onLine ? "reconnecting" : "offline");
    this.firstLoadWithoutStream();
    this.scheduleReconnect();
  }

  send(ws, message) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  async receive(ws, message) {
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    switch (data.type) {
      case "welcome":
        await this.welcome(ws, data);
        break;
      case "event":
        this.event(ws, data);
        break;
      case "resync":
        await this.resync(ws, data);
        break;
      case "result": {
        const waiter = this.pending.get(data.request_id);
        if (waiter) {
          this.pending.delete(data.request_id);
          clearTimeout(waiter.timer);
          waiter.resolve(data);
        }
        break;
      }
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      default:
        break; // "closing" precedes the close event; "error" is about our own bad message
    }
  }

  async welcome(ws, data) {
    ws.welcomed = true;
    this.attempt = 0;
    this.onWelcome(data);
    if (!this.synced) {
      // The page's REST load happens after the first welcome, so it reflects every event ≤ head (a
      // page that had to load without the stream loads again now that it is connected).
      const reason = this.loaded ? "online" : "start";
      this.synced = this.loaded = true;
      this.known = data.head;
      try {
        await this.onLoad(reason);
      } catch {
        /* the page shows its own error; live events still flow */
      }
    }
    if (this.ws !== ws) return;
    // A cursor ahead of the feed (the database was reset) is answered by a resync.
    this.send(ws, { type: "hello", resume_from: this.last });
    // Whatever the last socket processed but had not acknowledged yet is acknowledged on this one
    // (once the server has started the replay, which is when it accepts acks up to resume_from).
    this.acked = 0;
    if (this.last > 0) this.ackTimer = setTimeout(() => this.scheduleAck(ws, this.last), 500);
    this.setState("live");
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.ping(ws), PING_EVERY_MS);
  }

  ping(ws) {
    this.send(ws, { type: "ping" });
    clearTimeout(this.pongTimer);
    // No answer: the connection is half-open (a phone changed networks); start again.
    this.pongTimer = setTimeout(() => ws.close(4000, "no pong"), PONG_TIMEOUT_MS);
  }

  event(ws, data) {
    const seq = data.seq;
    if (typeof seq !== "number") return;
    if (seq <= this.last) {
      this.scheduleAck(ws, this.last); // seen before (at-least-once delivery): only acknowledge
      return;
    }
    this.last = seq;
    writeCursor(this.userId, seq);
    try {
      this.onEvent(data, { seq, known: seq <= this.known, at: data.at });
    } catch (error) {
      console.error("event handler failed", data.event, error);
    }
    this.scheduleAck(ws, seq);
  }

  scheduleAck(ws, seq) {
    if (seq <= this.acked) return;
    clearTimeout(this.ackTimer);
    const flush = () => {
      if (this.last > this.acked && ws.readyState === WebSocket.OPEN) {
        this.acked = this.last;
        this.send(ws, { type: "ack", seq: this.last });
      }
    };
    // Acks are cumulative: one for the last of a burst is enough, but a long replay is acknowledged
    // as it goes, so the server's window of unacknowledged events (WS_WINDOW) never stalls it.
    if (this.last - this.acked >= ACK_EVERY) flush();
    else this.ackTimer = setTimeout(flush, ACK_DELAY_MS);
  }

  async resync(ws, data) {
    // Our cursor is unusable (too old, or ahead of a reset database): reload state, continue at head.
    this.last = data.head;
    this.known = data.head;
    this.acked = 0;
    try {
      window.localStorage.setItem(cursorKey(this.userId), String(data.head));
    } catch {
      /* ignore */
    }
    try {
      await this.onLoad("resync");
    } catch {
      /* the page shows its own error */
    }
  }

  /** Send an action ({action: "order.sign", order_id: 7}); resolves with the server's result. */
  action(fields, timeoutMs = 15000) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error("not connected"));
    const requestId = `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new Error("timeout"));
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer });
      this.send(ws, { type: "action", request_id: requestId, ...fields });
    });
  }

  /** A warning's read receipt; resolves with {warning_id, read_at} (rejects when refused or offline). */
  read(warningId) {
    return this.action({ action: "warning.read", warning_id: warningId });
  }
}
