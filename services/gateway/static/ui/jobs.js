// The Jobs list, live: a run's state change (GET /api/v1/events, type=run) refreshes the table's
// rows from the server (the whole tbody, so nothing repeats); "Reconnecting..." while the stream
// is down, and the rows are read again whole when it is back. Without this script the list is
// as fresh as its last load.
(function () {
  "use strict";
  var table = document.querySelector("table.jobs[data-live]");
  var status = document.getElementById("jobs-live");
  if (!table || !status || !window.EventSource) return;
  var timer = null, opened = false;

  function refresh() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      // Not while someone types a name to delete or has a control focused in the table.
      if (table.querySelector("details[open]") || table.contains(document.activeElement)) return;
      window.htmx.ajax("GET", location.pathname + location.search,
        {target: "table.jobs tbody", select: "table.jobs tbody", swap: "outerHTML"});
    }, 300);
  }

  var source = new EventSource("/api/v1/events?type=run");
  source.addEventListener("open", function () {
    status.textContent = "Live: rows update as runs start and end.";
    if (opened) refresh();  // back after a break: read the rows again whole
    opened = true;
  });
  source.addEventListener("error", function () { status.textContent = "Reconnecting..."; });
  source.addEventListener("run.state", refresh);
  source.addEventListener("reset", refresh);
})();
