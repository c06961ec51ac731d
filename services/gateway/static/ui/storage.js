// The Storage page's charts: Chart.js (vendored, loaded on this page only) over the page's JSON
// data island (type application/json: data, not script, so the CSP allows it). Colours are the
// theme's CSS variables, read with getComputedStyle; every chart's numbers are also a table.
(function () {
  "use strict";

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"], i = 0;
    n = Number(n) || 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  function colour(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
  }

  function base(stacked) {
    var text = colour("--text"), line = colour("--line");
    return {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: {
        legend: { labels: { color: text } },
        tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + human(c.parsed.y); } } }
      },
      scales: {
        x: { stacked: !!stacked, ticks: { color: text }, grid: { color: line } },
        y: { stacked: !!stacked, ticks: { color: text, callback: function (v) { return human(v); } }, grid: { color: line }, beginAtZero: true }
      }
    };
  }

  function usage(repo) {
    var s = repo.samples.filter(function (x) { return x.used !== null; });
    var labels = s.map(function (x) { return x.day; });
    var limit = s.map(function (x) { return x.total * repo.threshold / 100; });
    return {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: "Used", data: s.map(function (x) { return x.used; }), stack: "space", borderColor: colour("--accent"), backgroundColor: colour("--run-bg"), fill: "origin" },
          { label: "Free", data: s.map(function (x) { return x.free; }), stack: "space", borderColor: colour("--ok"), backgroundColor: colour("--ok-bg"), fill: "-1" },
          { label: repo.threshold + " %", data: limit, stack: "line", borderColor: colour("--bad"), backgroundColor: colour("--bad"), borderDash: [6, 4], pointRadius: s.length > 1 ? 0 : 3, fill: false }
        ]
      },
      options: (function () { var o = base(false); o.scales.y.stacked = true; return o; })()  // used + free = total
    };
  }

  function reduction(repo) {
    var s = repo.samples;
    return {
      type: "line",
      data: {
        labels: s.map(function (x) { return x.day; }),
        datasets: [
          { label: "Logical", data: s.map(function (x) { return x.logical; }), borderColor: colour("--accent"), backgroundColor: colour("--accent") },
          { label: "Stored", data: s.map(function (x) { return x.stored; }), borderColor: colour("--warn"), backgroundColor: colour("--warn") }
        ]
      },
      options: base(false)
    };
  }

  function bars(rows, label, key) {
    var o = base(false);
    o.indexAxis = "y";
    o.scales = {
      x: { ticks: { color: colour("--text"), callback: function (v) { return human(v); } }, grid: { color: colour("--line") }, beginAtZero: true },
      y: { ticks: { color: colour("--text") }, grid: { color: colour("--line") } }
    };
    o.plugins.legend = { display: false };
    o.plugins.tooltip = { callbacks: { label: function (c) { return label + ": " + human(c.parsed.x); } } };
    return {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r[key || "name"]; }),
        datasets: [{ label: label, data: rows.map(function (r) { return r.bytes; }), backgroundColor: colour("--accent") }]
      },
      options: o
    };
  }

  var charts = [];
  function draw() {
    var island = document.getElementById("storage-data");
    if (!island || !window.Chart) return;
    var d = JSON.parse(island.textContent);
    charts.forEach(function (c) { c.destroy(); });
    charts = [];
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var kind = canvas.getAttribute("data-chart"), repo = d.repositories[Number(canvas.getAttribute("data-index"))];
      var config = null;
      if (kind === "usage" && repo) config = usage(repo);
      else if (kind === "reduction" && repo) config = reduction(repo);
      else if (kind === "vms") config = bars(d.vms, "Stored");
      else if (kind === "jobs") config = bars(d.jobs, "Stored");
      else if (kind === "growth") config = bars(d.growth, "Added");
      else if (kind === "change") config = bars(d.change, "Changed per incremental");
      if (config) charts.push(new window.Chart(canvas, config));
    });
  }
  document.addEventListener("DOMContentLoaded", draw);
  // the theme changes the variables: draw again in the new colours
  if (window.matchMedia) {
    var dark = window.matchMedia("(prefers-color-scheme: dark)");
    if (dark.addEventListener) dark.addEventListener("change", draw);
  }
  new MutationObserver(draw).observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
})();
