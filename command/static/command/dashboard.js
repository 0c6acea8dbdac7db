/* The statistics dashboard: loads figures from the REST API and draws them (Chart.js; Leaflet or SVG). */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const S = config.strings;
  const root = document.getElementById("dashboard");
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79"];
  // YlOrRd, 5 classes (ColorBrewer); zero gets a neutral grey so "no incidents" reads as such.
  const CLASSES = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"];
  const ZERO = "#eef0f2";

  function url(base, extra) {
    const params = new URLSearchParams(Object.assign({}, config.params, extra || {}));
    return base + "?" + params.toString();
  }

  async function getJSON(address) {
    const response = await fetch(address, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(address + ": " + response.status);
    return response.json();
  }

  function pct(value) {
    return value === null || value === undefined ? "—" : (value * 100).toFixed(1) + "%";
  }

  function num(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits || 0);
  }

  function setChange(id, value) {
    const el = document.getElementById(id);
    if (value === null || value === undefined) { el.textContent = ""; return; }
    const sign = value > 0 ? "+" : "";
    el.textContent = sign + (value * 100).toFixed(1) + "% " + S.vs_previous;
    el.dataset.direction = value > 0 ? "up" : value < 0 ? "down" : "flat";
  }

  function chart(id, options) {
    return new Chart(document.getElementById(id), options);
  }

  const base = { responsive: true, maintainAspectRatio: false, animation: false };

  function drawCompare(data) {
    const cur = data.current, prev = data.previous;
    document.getElementById("kpi-total").textContent = cur.total;
    document.getElementById("kpi-done").textContent = cur.done;
    document.getElementById("kpi-overdue").textContent = cur.overdue;
    setChange("kpi-total-change", data.change.total);
    setChange("kpi-done-change", data.change.done);
    setChange("kpi-overdue-change", data.change.overdue);
    chart("chart-daily", {
      type: "line",
      data: {
        labels: cur.daily.map((d) => d.day.slice(5)),
        datasets: [
          { label: S.current, data: cur.daily.map((d) => d.count), borderColor: "#b3261e", backgroundColor: "#b3261e", tension: 0.2 },
          { label: S.previous, data: prev.daily.map((d) => d.count), borderColor: "#8a949e", backgroundColor: "#8a949e", borderDash: [6, 4], tension: 0.2 },
        ],
      },
      options: Object.assign({}, base, { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }),
    });
    const families = Object.keys(config.families);
    chart("chart-family", {
      type: "bar",
      data: {
        labels: families.map((f) => config.families[f]),
        datasets: [
          { label: S.current, data: families.map((f) => cur.by_family[f] || 0), backgroundColor: "#12263a" },
          { label: S.previous, data: families.map((f) => prev.by_family[f] || 0), backgroundColor: "#b8c2cc" },
        ],
      },
      options: Object.assign({}, base, { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }),
    });
    const grades = Object.keys(cur.by_grade);
    chart("chart-grade", {
      type: "doughnut",
      data: {
        labels: grades.map((g) => (g === "none" ? S.none : g + " " + (config.grades[g] || ""))),
        datasets: [{ data: grades.map((g) => cur.by_grade[g]), backgroundColor: ["#d62728", "#ff7f0e", "#f2c80f", "#1f77b4", "#b8c2cc"] }],
      },
      options: Object.assign({}, base, { plugins: { legend: { position: "right" } } }),
    });
  }

  function drawStatus(data) {
    const totals = {};
    for (const row of data.rows) totals[row.key] = (totals[row.key] || 0) + row.count;
    const keys = Object.keys(config.statuses).filter((k) => totals[k]);
    chart("chart-status", {
      type: "bar",
      data: {
        labels: keys.map((k) => config.statuses[k]),
        datasets: [{ label: S.incidents, data: keys.map((k) => totals[k]), backgroundColor: keys.map((_, i) => PALETTE[i % PALETTE.length]) }],
      },
      options: Object.assign({}, base, { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }),
    });
  }

  function breaks(values) {
    // Quantile class breaks over the non-zero densities: every class holds about as many blocks.
    const sorted = values.filter((v) => v > 0).sort((a, b) => a - b);
    if (!sorted.length) return [];
    const result = [];
    for (let i = 1; i < CLASSES.length; i++) result.push(sorted[Math.min(sorted.length - 1, Math.floor((i * sorted.length) / CLASSES.length))]);
    return result;
  }

  function colour(value, limits) {
    if (!value) return ZERO;
    let i = 0;
    while (i < limits.length && value > limits[i]) i++;
    return CLASSES[i];
  }

  function drawLegend(limits) {
    const legend = document.getElementById("legend");
    legend.innerHTML = "";
    const items = [[ZERO, "0"]];
    let low = 0;
    CLASSES.forEach((c, i) => {
      const high = limits[i];
      items.push([c, high === undefined ? "> " + num(low, 1) : num(low, 1) + "–" + num(high, 1)]);
      if (high !== undefined) low = high;
    });
    for (const [c, label] of items) {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("i");
      swatch.style.background = c;
      item.append(swatch, document.createTextNode(label));
      legend.append(item);
    }
    const unit = document.createElement("span");
    unit.className = "legend-unit";
    unit.textContent = S.density;
    legend.append(unit);
  }

  function drawMap(shapes, units, emerging) {
    const density = {};
    for (const u of units.units) density[u.code] = u.density_per_km2 || 0;
    const limits = breaks(Object.values(density));
    drawLegend(limits);
    const box = document.getElementById("choropleth");
    if (config.leaflet && window.L) {
      const map = L.map(box, { attributionControl: false, zoomSnap: 0.25 });
      const layer = L.geoJSON(shapes, {
        style: (f) => ({
          fillColor: colour(density[f.properties.code], limits),
          fillOpacity: 0.85,
          color: emerging.has(f.properties.code) ? "#12263a" : "#ffffff",
          weight: emerging.has(f.properties.code) ? 3 : 0.6,
        }),
        onEachFeature: (f, l) => l.bindTooltip(f.properties.name + ": " + num(density[f.properties.code], 2) + " /km²"),
      }).addTo(map);
      const bounds = layer.getBounds();
      if (bounds.isValid()) map.fitBounds(bounds);
      return;
    }
    drawSvg(box, shapes, density, limits, emerging);
  }

  function drawSvg(box, shapes, density, limits, emerging) {
    const NS = "http://www.w3.org/2000/svg";
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    const rings = (g) => (g.type === "Polygon" ? [g.coordinates] : g.coordinates);
    for (const f of shapes.features) for (const poly of rings(f.geometry)) for (const [x, y] of poly[0]) {
      minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
    }
    // Equirectangular with cos(latitude) so shapes keep their proportions at this latitude.
    const k = Math.cos(((minY + maxY) / 2) * Math.PI / 180);
    const width = 1000, height = Math.max(200, Math.round((width * (maxY - minY)) / ((maxX - minX) * k)));
    const sx = (x) => ((x - minX) / (maxX - minX)) * width;
    const sy = (y) => height - ((y - minY) / (maxY - minY)) * height;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("class", "svgmap");
    for (const f of shapes.features) {
      const path = document.createElementNS(NS, "path");
      let d = "";
      for (const poly of rings(f.geometry)) for (const ring of poly) d += "M" + ring.map(([x, y]) => sx(x).toFixed(1) + "," + sy(y).toFixed(1)).join("L") + "Z";
      path.setAttribute("d", d);
      path.setAttribute("fill", colour(density[f.properties.code], limits));
      path.setAttribute("stroke", emerging.has(f.properties.code) ? "#12263a" : "#fff");
      path.setAttribute("stroke-width", emerging.has(f.properties.code) ? "3" : "0.5");
      const title = document.createElementNS(NS, "title");
      title.textContent = f.properties.name + ": " + num(density[f.properties.code], 2) + " /km²";
      path.append(title);
      svg.append(path);
    }
    box.append(svg);
  }

  function fillTable(id, rows, cells) {
    const body = document.querySelector("#" + id + " tbody");
    body.innerHTML = "";
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = document.querySelectorAll("#" + id + " thead th").length;
      td.className = "empty";
      td.textContent = S.no_data;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const value of cells(row)) {
        const td = document.createElement("td");
        if (value instanceof Node) td.append(value); else td.textContent = value;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  function drawHotspots(data) {
    document.getElementById("kpi-hotspots").textContent = data.emerging.length;
    const rows = data.ranked.filter((h) => h.count > 0).slice(0, 10);
    fillTable("hotspots", rows, (h) => {
      const flag = document.createElement("span");
      if (h.emerging) { flag.className = "flag"; flag.textContent = S.emerging; }
      return [h.name || h.code, h.count, num(h.expected, 2), h.p_value < 0.001 ? h.p_value.toExponential(1) : num(h.p_value, 3), flag];
    });
    fillTable("densest", data.density.filter((d) => d.count > 0).slice(0, 10), (d) => [d.name || d.code, d.count, num(d.density_per_km2, 2)]);
  }

  function drawEvaluation(data) {
    const rows = data.rows.slice().sort((a, b) => b.orders - a.orders);
    fillTable("evaluation", rows, (r) => [
      r.name, r.orders, pct(r.sign_on_time_rate), pct(r.arrive_on_time_rate), pct(r.complete_on_time_rate),
      pct(r.rejection_rate), pct(r.rework_rate), num(r.mean_sign_min, 1), num(r.mean_arrive_min, 1), num(r.mean_handle_min, 1),
    ]);
    const top = rows.slice(0, 12);
    const rate = (v) => (v === null ? null : Math.round(v * 1000) / 10);
    chart("chart-evaluation", {
      type: "bar",
      data: {
        labels: top.map((r) => r.name),
        datasets: [
          { label: S.on_time_sign, data: top.map((r) => rate(r.sign_on_time_rate)), backgroundColor: "#1f77b4" },
          { label: S.on_time_arrive, data: top.map((r) => rate(r.arrive_on_time_rate)), backgroundColor: "#2ca02c" },
          { label: S.on_time_complete, data: top.map((r) => rate(r.complete_on_time_rate)), backgroundColor: "#ff7f0e" },
        ],
      },
      options: Object.assign({}, base, { scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: S.rate + " (%)" } } } }),
    });
  }

  async function main() {
    const now = new Date();
    const tasks = [
      getJSON(url(config.urls.compare)).then(drawCompare),
      getJSON(url(config.urls.counts, { by: "status" })).then(drawStatus),
      getJSON(url(config.urls.evaluation, { by: "department" })).then(drawEvaluation),
      (async () => {
        const [shapes, units, hotspots] = await Promise.all([
          getJSON(config.urls.territory + "?simplify=20"),
          getJSON(url(config.urls.units, { layer: "block" })),
          getJSON(config.urls.hotspots + "?" + new URLSearchParams({ layer: "block", at: config.params.to < now.toISOString() ? config.params.to : now.toISOString(), ...(config.params.category ? { category: config.params.category } : {}) })),
        ]);
        drawHotspots(hotspots);
        drawMap(shapes, units, new Set(hotspots.emerging.map((h) => h.code)));
      })(),
    ];
    const results = await Promise.allSettled(tasks);
    const failed = results.filter((r) => r.status === "rejected");
    failed.forEach((r) => console.error(r.reason));
    root.dataset.state = failed.length ? "error" : "ready";
    document.getElementById("dash-status").textContent = failed.length ? S.load_error : "";
    if (failed.length) {
      const note = document.createElement("p");
      note.className = "error";
      note.textContent = S.load_error;
      root.prepend(note);
    }
  }

  main();
})();
