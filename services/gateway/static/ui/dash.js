// The dashboard's live parts: bars from their data-percent (no inline styles under the CSP), and
// the runs now kept live over GET /api/v1/events. On every (re)connect the panel is fetched
// whole (so nothing repeats); between, progress events move the bars, and a run or task changing
// state fetches the panel again. While the stream is down the heading says "Reconnecting...".
(function () {
  "use strict";

  function bars(root) {
    root.querySelectorAll("[data-percent]").forEach(function (el) {
      var p = Math.max(0, Math.min(100, parseFloat(el.getAttribute("data-percent")) || 0));
      if (el.classList.contains("line")) el.style.left = p + "%"; else el.style.width = p + "%";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { bars(document); });
  document.addEventListener("htmx:afterSettle", function (event) { bars(event.target); });

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + units[i];
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("dash-running");
    var state = document.querySelector("[data-live-state]");
    if (!panel || !window.EventSource || !window.htmx) return;
    var refreshing = null;

    function refresh() {  // the panel whole, at most every 300 ms
      if (refreshing) return;
      refreshing = setTimeout(function () {
        refreshing = null;
        htmx.ajax("GET", "/dashboard/running", { target: panel, swap: "innerHTML" });
      }, 300);
    }
    function alerts() {
      var box = document.getElementById("dash-alerts");
      if (box) htmx.ajax("GET", "/dashboard/alerts", { target: box, swap: "innerHTML" });
    }
    function progress(data) {
      var row = panel.querySelector('tr[data-task="' + CSS.escape(data.key || "") + '"]');
      if (!row) { refresh(); return; }
      var pct = data.bytes_total ? Math.floor(100 * data.bytes_done / data.bytes_total) : 0;
      var bar = row.querySelector('[data-field="bar"]');
      if (bar) {
        bar.setAttribute("aria-valuenow", String(pct));
        var fill = bar.querySelector(".fill");
        if (fill) fill.style.width = pct + "%";
      }
      var set = function (field, text) {
        var el = row.querySelector('[data-field="' + field + '"]');
        if (el) el.textContent = text;
      };
      if (data.phase) set("phase", data.phase.charAt(0).toUpperCase() + data.phase.slice(1));
      set("bytes", human(data.bytes_done || 0) + " of " + human(data.bytes_total || 0));
      set("rate", data.rate ? human(data.rate) + "/s" : "-");
      set("eta", data.eta_s != null ? Math.round(data.eta_s) + " s" : "-");
    }

    var source = new EventSource("/api/v1/events?type=run,task,progress,alert");
    source.onopen = function () { if (state) state.textContent = ""; refresh(); };
    source.onerror = function () { if (state) state.textContent = "Reconnecting..."; };
    source.addEventListener("progress", function (e) {
      try { progress(JSON.parse(e.data)); } catch (err) { refresh(); }
    });
    ["run.state", "task.state", "reset"].forEach(function (type) { source.addEventListener(type, refresh); });
    source.addEventListener("alert.raised", alerts);
    window.addEventListener("pagehide", function () { source.close(); });
  });
})();
