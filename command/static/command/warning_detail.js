/* The early warning page: live coverage and read receipt (refreshed every few seconds) and the actions.
 * A static file, so the page's Content-Security-Policy needs no inline script. */
(function () {
  "use strict";
  var root = document.getElementById("warning");
  var pollMs = parseInt(root.dataset.pollMs, 10) || 5000;
  function local(iso) {
    // The server's time zone, as the rest of the page shows times, whatever the browser's is.
    return new Date(iso).toLocaleString(document.documentElement.lang || undefined,
                                        {timeZone: root.dataset.tz, hour12: false});
  }
  function pct(x) { return Math.round((x || 0) * 100) + "%"; }
  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function fillTable(id, rows) {
    var body = document.querySelector("#" + id + " tbody");
    if (!body) { return; }
    body.textContent = "";
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      [row.name || row.code || "—", String(row.recipients), pct(row.delivered_share), pct(row.read_share)]
        .forEach(function (t) { tr.appendChild(cell(t)); });
      body.appendChild(tr);
    });
  }
  function show(data) {
    document.getElementById("warning-version").textContent = data.version;
    var c = data.coverage;
    if (c) {
      var total = document.getElementById("coverage-total");
      total.querySelector('[data-k="recipients"]').textContent = c.recipients;
      total.querySelector('[data-k="delivered"]').textContent = c.delivered;
      total.querySelector('[data-k="read"]').textContent = c.read;
      total.querySelector('[data-k="delivered_pct"]').textContent = Math.round(c.delivered_share * 100);
      total.querySelector('[data-k="read_pct"]').textContent = Math.round(c.read_share * 100);
      fillTable("coverage-district", c.by_district);
      fillTable("coverage-department", c.by_department);
      var stamp = document.getElementById("refreshed-at");
      if (stamp) { stamp.textContent = local(new Date().toISOString()); }
    }
    if (data.my_receipt && document.getElementById("my-read-at")) {
      document.getElementById("my-read-at").textContent = data.my_receipt.read_at ? local(data.my_receipt.read_at) : "—";
    }
  }
  function refresh() {
    fetch(root.dataset.api, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { show(data); } })
      .catch(function () { /* the next round tries again */ });
  }
  function csrf() {
    var input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }
  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var body = {action: button.dataset.action};
      if (body.action === "cancel") {
        var reason = window.prompt(root.dataset.cancelPrompt);
        if (!reason) { return; }
        body.reason = reason;
      }
      fetch(root.dataset.actions, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf()},
        body: JSON.stringify(body)
      }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
        .then(function (res) {
          if (res[0]) { window.location.reload(); }
          else { document.getElementById("action-error").textContent = (res[1].error || {}).detail || ""; }
        });
    });
  });
  if (document.getElementById("coverage-total") || document.getElementById("my-read-at")) {
    window.setInterval(refresh, pollMs);
  }
}());
