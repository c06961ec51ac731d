// The restore's page live: the browser's EventSource on /api/v1/events?restore=<id>. On every
// (re)connect and on every event about this restore, the server's panel (/restores/{id}/panel)
// replaces the old one whole (at most every half second), so nothing repeats; "Reconnecting..."
// shows while the stream is down. Without this script the page shows the restore as loaded.
(function () {
  "use strict";
  var panel = document.getElementById("restore-panel");
  if (!panel || !window.EventSource) return;
  var id = panel.getAttribute("data-restore");
  var shown = document.getElementById("restore-connection");
  var url = "/restores/" + encodeURIComponent(id) + "/panel";
  var pending = null, source = null, stopped = false;

  function refresh() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      if (window.htmx) {  // htmx swaps it in and shows its times again (local, "3 h ago")
        window.htmx.ajax("GET", url, { target: "#restore-panel", swap: "outerHTML" })
          .catch(function () { if (shown) shown.hidden = false; });
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (resp) { if (!resp.ok) throw new Error("HTTP " + resp.status); return resp.text(); })
        .then(function (html) {
          var old = document.getElementById("restore-panel");
          var box = document.createElement("div");
          box.innerHTML = html;
          var fresh = box.querySelector("#restore-panel");
          if (old && fresh) old.replaceWith(fresh);
        })
        .catch(function () { if (shown) shown.hidden = false; });
    }, 500);
  }
  function open() {
    if (stopped) return;
    source = new EventSource("/api/v1/events?restore=" + encodeURIComponent(id));
    source.onopen = function () { if (shown) shown.hidden = true; refresh(); };
    source.onerror = function () {
      if (stopped) return;
      if (shown) shown.hidden = false;
      if (source.readyState === EventSource.CLOSED) setTimeout(open, 3000);
    };
    source.onmessage = refresh;
    ["restore.state", "progress", "reset"].forEach(function (t) {
      source.addEventListener(t, refresh);
    });
  }
  open();
  window.addEventListener("beforeunload", function () { stopped = true; if (source) source.close(); });
})();
