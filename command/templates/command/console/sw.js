// The grid worker page's service worker (scope {{ shell }}): the page opens without a network.
// The page shell is network-first (fresh when online, the last copy when not); scripts, styles and
// icons are served from the cache and refreshed in the background. Reports are not handled here:
// the page keeps them in IndexedDB and sends them itself when the network returns.
const VERSION = "{{ version|escapejs }}";
const CACHE = `yjld-m-${VERSION}`;
const SHELL = "{{ shell|escapejs }}";
const ASSETS = [{% for asset in assets %}"{{ asset|escapejs }}"{% if not forloop.last %}, {% endif %}{% endfor %}];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE)
      .then((cache) => Promise.all([cache.addAll(ASSETS), refreshShell(cache)]))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("yjld-m-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function refreshShell(cache) {
  try {
    const response = await fetch(SHELL, { credentials: "same-origin" });
    // A redirect means the session ended (to /login/): keep the last good shell instead.
    if (response.ok && !response.redirected) await cache.put(SHELL, response.clone());
    return response;
  } catch {
    return null;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === "navigate" && url.pathname === SHELL) {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok && !response.redirected) await cache.put(SHELL, response.clone());
        return response;
      } catch {
        return (await cache.match(SHELL)) || Response.error();
      }
    })());
    return;
  }
  if (ASSETS.includes(url.pathname)) {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE);
      const cached = await cache.match(url.pathname);
      const fresh = fetch(request).then((response) => {
        if (response.ok) cache.put(url.pathname, response.clone());
        return response;
      }).catch(() => null);
      if (cached) {
        event.waitUntil(fresh);
        return cached;
      }
      return (await fresh) || Response.error();
    })());
  }
});
