// The phone's outbox: reports (with their photos) kept in IndexedDB until the server has them.
//
// Every report gets its Idempotency-Key when it is written, so sending it again after a lost answer
// can never make a second incident. A report is queued → sending → sent, or failed (with why);
// network trouble and server errors put it back in the queue and it is tried again when the
// network returns (the `online` event), when the page opens, and with backoff while online.

const DB_NAME = "yjld-outbox";
const STORE = "reports";
const RETRY_MAX_MS = 60000;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let dbPromise = null;
function db() {
  if (!dbPromise) {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => {
      const store = open.result.createObjectStore(STORE, { keyPath: "key" });
      store.createIndex("user", "user");
    };
    dbPromise = request(open);
  }
  return dbPromise;
}

async function tx(mode, work) {
  const database = await db();
  const transaction = database.transaction(STORE, mode);
  const result = await work(transaction.objectStore(STORE));
  await new Promise((resolve, reject) => {
    transaction.oncomplete = resolve;
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error);
  });
  return result;
}

/** A random key for Idempotency-Key (crypto.randomUUID needs a secure context; this does not). */
export function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * new Outbox({user, send, onChange})
 * send(record) → Promise<{ok, status, data}> (rejects on network failure)
 */
export class Outbox {
  constructor({ user, send, onChange }) {
    this.user = user;
    this.send = send;
    this.onChange = onChange || (() => {});
    this.flushing = null;
    this.retryTimer = null;
    this.failures = 0;
    window.addEventListener("online", () => this.flush());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.flush();
    });
  }

  async list() {
    const rows = await tx("readonly", (store) => request(store.index("user").getAll(this.user)));
    return rows.sort((a, b) => b.created_at.localeCompare(a.created_at));
  }

  async save(record) {
    await tx("readwrite", (store) => request(store.put(record)));
    this.onChange(record);
    return record;
  }

  async remove(key) {
    await tx("readwrite", (store) => request(store.delete(key)));
    this.onChange(null);
  }

  /** Keep a new report (fields plus File objects) and try to send it. */
  async add(fields, files) {
    const photos = [];
    for (const file of files) {
      // Stored as Blobs: IndexedDB keeps them across reloads and restarts of the phone.
      photos.push({ name: file.name || "photo.jpg", type: file.type || "image/jpeg", blob: file.slice(0, file.size, file.type) });
    }
    const record = {
      key: newKey(),
      user: this.user,
      created_at: new Date().toISOString(),
      fields,
      photos,
      state: "queued",
      error: "",
      attempts: 0,
      incident: null,
    };
    await this.save(record);
    this.flush();
    return record;
  }

  async retry(key) {
    const record = (await this.list()).find((r) => r.key === key);
    if (!record) return;
    record.state = "queued";
    record.error = "";
    await this.save(record);
    this.flush();
  }

  /** Send every queued report, oldest first; one flush at a time. */
  flush() {
    if (!this.flushing) {
      this.flushing = this.drain().finally(() => {
        this.flushing = null;
      });
    }
    return this.flushing;
  }

  async drain() {
    clearTimeout(this.retryTimer);
    const waiting = (await this.list()).filter((r) => r.state === "queued" || r.state === "sending").reverse();
    for (const record of waiting) {
      if (!navigator.onLine) return; // the `online` event starts the next flush
      record.state = "sending";
      record.attempts += 1;
      await this.save(record);
      let result;
      try {
        result = await this.send(record);
      } catch {
        record.state = "queued";
        record.error = "network";
        await this.save(record);
        this.retryLater();
        return;
      }
      if (result.ok) {
        record.state = "sent";
        record.error = "";
        record.sent_at = new Date().toISOString();
        record.incident = { id: result.data.id, code: result.data.code, status: result.data.status };
        // The photos are on the server now: keep only their count on the phone.
        record.photo_count = record.photos.length;
        record.photos = [];
        this.failures = 0;
      } else if (result.status >= 500 || result.status === 408 || result.status === 429) {
        record.state = "queued";
        record.error = "server";
        await this.save(record);
        this.retryLater();
        return;
      } else {
        record.state = "failed";
        record.error = result.status === 401 || result.status === 403 ? "auth" : (result.data && result.data.error && result.data.error.detail) || `HTTP ${result.status}`;
        record.status = result.status;
      }
      await this.save(record);
    }
  }

  retryLater() {
    this.failures += 1;
    const cap = Math.min(RETRY_MAX_MS, 1000 * 2 ** this.failures);
    clearTimeout(this.retryTimer);
    if (navigator.onLine) this.retryTimer = setTimeout(() => this.flush(), cap / 2 + Math.random() * (cap / 2));
  }
}
