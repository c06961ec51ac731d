// The Restores list live: the browser's EventSource on /api/v1/events?type=restore,progress. A
// progress sample of a restore shown moves its row's bar; a restore's state change (of a row
// shown, or any on the first page, where a new restore appears) and every (re)connect reload the
// rows (/restores/rows with the page's query string), at most every half second, so nothing
// repeats. "Reconnecting..." shows while the stream is down. Without this script the list shows
// the restores as loaded, with a Refresh link.
(function () {
  "use strict";
  var table = document.querySelector("[data-live-restores]");
  if (!table || !window.EventSource) return;
  var shown = document.getElementById("run-connection");
  var pending = null, source = null, stopped = false;

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/["\\]/g, "\\$&");
  }
  function row(id) {
    return document.querySelector('#restores-rows tr[data-restore-id="' + cssEscape(id || "") + '"]');
  }
  function reload() {
    if (pending) return;
    pending = setTimeout(function () {
      var url = "/restores/rows" + window.location.search;
      var done = function () { pending = null; };
      if (window.htmx) {  // htmx swaps the rows in and shows their times again (local, "3 h ago")
        window.htmx.ajax("GET", url, { target: "#restores-rows", swap: "outerHTML" })
          .then(done, function () { done(); if (shown) shown.hidden = false; });
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (resp) { if (!resp.ok) throw new Error("HTTP " + resp.status); return resp.text(); })
        .then(function (html) {
          var old = document.getElementById("restores-rows");
          var box = document.createElement("table");
          box.innerHTML = html;
          var fresh = box.querySelector("#restores-rows");
          if (old && fresh) old.replaceWith(fresh);
        })
        .catch(function () { if (shown) shown.hidden = false; })
        .then(done);
    }, 500);
  }
  function progress(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    var tr = row(data.key);
    if (!tr) return;
    var bar = tr.querySelector(".runbar");
    if (!bar) { reload(); return; }
    var pct = data.bytes_total ? Math.max(0, Math.min(100, Math.floor((data.bytes_done * 100) / data.bytes_total))) : 0;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", pct + " % " + (data.phase || ""));
    var meter = bar.querySelector("progress");
    if (meter) meter.value = pct;
    var label = bar.querySelector(".pct");
    if (label) label.textContent = pct + " %";
  }
  function state(event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    if (row(data.restore_id) || window.location.search.indexOf("cursor=") < 0) reload();
  }
  function open() {
    if (stopped) return;
    source = new EventSource("/api/v1/events?type=restore,progress");
    source.onopen = function () { if (shown) shown.hidden = true; reload(); };
    source.onerror = function () {
      if (stopped) return;
      if (shown) shown.hidden = false;
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 3000);
    };
    source.addEventListener("progress", progress);
    source.addEventListener("restore.state", state);
    source.addEventListener("reset", reload);
  }
  open();
  window.addEventListener("beforeunload", function () { stopped = true; if (source) source.close(); });
})();
