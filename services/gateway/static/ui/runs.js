// The Runs pages live: the browser's EventSource on /api/v1/events. On a run's page, progress
// samples move the bars; every (re)connect and every state change puts the server's panel
// (/runs/{id}/panel) in place of the old one, whole, so nothing repeats; log lines are appended
// after the last id shown (GET /api/v1/runs/{id}/log?after=N). On the list, running rows move
// and a state change reloads the rows (/runs/rows). Without this script the pages still show
// the state as of loading.
(function () {
  "use strict";

  var LABELS = {
    queued: "Queued", connecting: "Connecting", snapshot: "Snapshot", downloading: "Downloading",
    writing: "Writing", verifying: "Verifying", replicating: "Replicating", done: "Done"
  };

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(n) < 1024 || i === units.length - 1) return i === 0 ? Math.round(n) + " B" : n.toFixed(1) + " " + units[i];
      n /= 1024;
    }
    return String(n);
  }
  function duration(s) {
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function setBar(bar, pct, text) {
    if (!bar) return;
    pct = Math.max(0, Math.min(100, Math.floor(pct)));
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", pct + " %" + (text ? " " + text : ""));
    var meter = bar.querySelector("progress");
    if (meter) meter.value = pct;
    var label = bar.querySelector(".pct");
    if (label) label.textContent = pct + " %";
  }
  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/["\\]/g, "\\$&");
  }

  // A stream that says when it is down ("Reconnecting...") and calls `opened` on every
  // (re)connect; a stream the browser gave up on (an HTTP error) is opened again after 3 s.
  function stream(url, handlers, opened) {
    var shown = document.getElementById("run-connection");
    var source = null, stopped = false;
    function down() { if (shown) shown.hidden = false; }
    function up() { if (shown) shown.hidden = true; }
    function open() {
      if (stopped) return;
      source = new EventSource(url);
      source.onopen = function () { up(); opened(); };
      source.onerror = function () {
        if (stopped) return;
        down();
        if (source.readyState === EventSource.CLOSED) setTimeout(open, 3000);
      };
      Object.keys(handlers).forEach(function (type) {
        source.addEventListener(type, function (event) {
          var data;
          try { data = JSON.parse(event.data); } catch (e) { return; }
          handlers[type](data);
        });
      });
    }
    open();
    window.addEventListener("beforeunload", function () { stopped = true; if (source) source.close(); });
    return { close: function () { stopped = true; up(); if (source) source.close(); } };
  }

  // Replace an element by the server's fragment, whole (htmx when loaded: times are shown again).
  function replaceWith(selector, url) {
    if (window.htmx) {
      return window.htmx.ajax("GET", url, { target: selector, swap: "outerHTML" });
    }
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.text();
      })
      .then(function (html) {
        var old = document.querySelector(selector);
        if (old) old.outerHTML = html;
      });
  }

  // ---- a run's page ------------------------------------------------------------------------
  function runPage(panel) {
    var runId = panel.getAttribute("data-run-id");
    var announce = document.getElementById("run-announce");
    var log = document.getElementById("run-log");
    var follow = document.getElementById("log-follow");
    var note = document.getElementById("run-live-note");
    var phases = {}, decile = null, live = null, pending = null, logBusy = false, logAgain = false;
    var programmatic = false;

    if (note) {
      note.textContent = panel.getAttribute("data-finished") === "true"
        ? "This run has ended." : "Live: this page follows the run as it happens.";
    }

    function say(text) { if (announce) announce.textContent = text; }
    function current() { return document.getElementById("run-panel"); }
    function finished() { var p = current(); return p && p.getAttribute("data-finished") === "true"; }

    // What the panel shows now, remembered so that only changes are announced (in one message,
    // so that one does not cut another short).
    function remember(first) {
      var p = current(), said = [];
      if (!p) return;
      p.querySelectorAll(".task").forEach(function (task) {
        var id = task.getAttribute("data-task-id"), phase = task.getAttribute("data-phase");
        var name = task.querySelector("h3").firstChild.textContent.trim();
        if (!first && phases[id] !== phase) said.push(name + ": " + (LABELS[phase] || phase));
        phases[id] = phase;
      });
      var bar = document.getElementById("run-progress");
      if (bar) decile = Math.floor(Number(bar.getAttribute("aria-valuenow")) / 10);
      if (!first && p.getAttribute("data-finished") === "true") {
        var badge = p.querySelector("#state-h .badge");
        said.push("The run ended: " + (badge ? badge.textContent : p.getAttribute("data-state")));
      }
      if (said.length) say(said.join(". "));
    }

    function refresh() {
      if (pending) return pending;
      pending = Promise.resolve(replaceWith("#run-panel", "/runs/" + encodeURIComponent(runId) + "/panel"))
        .then(function () { remember(false); })
        .catch(function (err) { if (window.vbmToast) window.vbmToast("The run could not be reloaded: " + err, "error"); })
        .then(function () {
          pending = null;
          moreLog();
          if (finished() && live) {
            live.close();
            live = null;
            if (note) note.textContent = "This run has ended.";
          }
        });
      return pending;
    }

    // Under a VM's bar, one small bar per disk, from the samples that carry `disks` (a sample
    // without them, or none yet: nothing extra is shown). Made once, then moved in place.
    function diskBars(task, list) {
      if (!list || !list.length) return;
      var box = task.querySelector(".disk-bars");
      var vm = task.querySelector("h3").firstChild.textContent.trim();
      if (!box) {
        box = document.createElement("ul");
        box.className = "disk-bars";
        box.setAttribute("aria-label", "Disks of " + vm);
        var after = task.querySelector(".numbers") || task.querySelector(".runbar");
        if (after) after.insertAdjacentElement("afterend", box); else task.appendChild(box);
      }
      list.forEach(function (d) {
        var item = box.querySelector('li[data-disk-key="' + cssEscape(String(d.key)) + '"]');
        if (!item) {
          item = document.createElement("li");
          item.setAttribute("data-disk-key", String(d.key));
          var label = document.createElement("span");
          label.className = "d-label";
          label.textContent = d.label;
          var bar = document.createElement("div");
          bar.className = "runbar diskbar";
          bar.setAttribute("role", "progressbar");
          bar.setAttribute("aria-label", "Progress of " + vm + " " + d.label);
          bar.setAttribute("aria-valuemin", "0");
          bar.setAttribute("aria-valuemax", "100");
          var meter = document.createElement("progress");
          meter.max = 100;
          meter.setAttribute("aria-hidden", "true");
          var pct = document.createElement("span");
          pct.className = "pct";
          bar.appendChild(meter);
          bar.appendChild(pct);
          var bytes = document.createElement("span");
          bytes.className = "d-bytes";
          item.appendChild(label);
          item.appendChild(bar);
          item.appendChild(bytes);
          box.appendChild(item);
        }
        var total = d.bytes_total || 0, done = d.bytes_done || 0, text = human(done) + " of " + human(total);
        setBar(item.querySelector(".diskbar"), total ? (done * 100) / total : 100, "(" + text + ")");
        item.querySelector(".d-bytes").textContent = text;
      });
    }

    function progress(sample) {
      var p = current();
      if (!p || sample.run_id !== runId) return;
      var task = p.querySelector('.task[data-task-id="' + cssEscape(sample.key) + '"]');
      if (!task) { refresh(); return; }
      var total = sample.bytes_total || 0, done = sample.bytes_done || 0;
      setBar(task.querySelector(".runbar:not(.diskbar)"), total ? (done * 100) / total : 0, "");
      diskBars(task, sample.disks);
      var bytes = task.querySelector(".t-bytes");
      if (bytes) bytes.textContent = human(done) + " of " + human(total);
      var rate = task.querySelector(".t-rate");
      if (rate) rate.textContent = sample.rate > 0 ? human(sample.rate) + "/s" : "-";
      var eta = task.querySelector(".t-eta");
      if (eta) eta.textContent = sample.eta_s === null || sample.eta_s === undefined ? "-" : duration(sample.eta_s);
      task.setAttribute("data-done", String(done));
      task.setAttribute("data-total", String(total));
      if (sample.phase && sample.phase !== task.getAttribute("data-phase")) { refresh(); return; }
      // the run's bar: the sum over its VMs (those without a sample keep the panel's numbers)
      var sumDone = 0, sumTotal = 0;
      p.querySelectorAll(".task").forEach(function (t) {
        sumDone += Number(t.getAttribute("data-done")) || 0;
        sumTotal += Number(t.getAttribute("data-total")) || 0;
      });
      if (sumTotal > 0) {
        var pct = (sumDone * 100) / sumTotal;
        setBar(document.getElementById("run-progress"), pct, "(" + human(sumDone) + " of " + human(sumTotal) + ")");
        var runBytes = document.getElementById("run-bytes");
        if (runBytes) runBytes.textContent = human(sumDone) + " of " + human(sumTotal);
        var now = Math.floor(pct / 10);
        if (decile !== null && now > decile) say(Math.floor(pct / 10) * 10 + " % of the run done");
        decile = now;
      }
      moreLog();
    }

    // ---- the log: appended after the last id shown, never twice --------------------------------
    function lastId() { return Number(log.getAttribute("data-after")) || 0; }
    function moreLog() {
      if (!log) return;
      if (logBusy) { logAgain = true; return; }
      logBusy = true;
      fetch("/api/v1/runs/" + encodeURIComponent(runId) + "/log?after=" + lastId(), { credentials: "same-origin" })
        .then(function (resp) {
          if (!resp.ok) throw new Error("HTTP " + resp.status);
          return resp.json();
        })
        .then(function (body) { append(body.lines || []); })
        .catch(function () { /* the stream's reconnect fetches the log again */ })
        .then(function () {
          logBusy = false;
          if (logAgain) { logAgain = false; moreLog(); }
        });
    }
    function append(lines) {
      var after = lastId(), added = false;
      lines.forEach(function (line) {
        if (line.id <= after || log.querySelector('li[data-id="' + line.id + '"]')) return;
        var item = document.createElement("li");
        item.setAttribute("data-id", String(line.id));
        item.className = "lvl-" + line.level;
        var when = document.createElement("time");
        when.setAttribute("datetime", line.at);
        var at = new Date(line.at);
        when.textContent = isNaN(at) ? line.at : at.toLocaleString();
        when.title = line.at + " (UTC)";
        var level = document.createElement("span");
        level.className = "level";
        level.textContent = line.level;
        var msg = document.createElement("span");
        msg.className = "msg";
        msg.textContent = line.message;
        item.append(when, " ", level, " ", msg);
        log.appendChild(item);
        after = line.id;
        added = true;
      });
      log.setAttribute("data-after", String(after));
      if (added) {
        var empty = document.getElementById("log-empty");
        if (empty) empty.remove();
        if (follow && follow.checked) toBottom();
      }
    }
    function toBottom() {
      programmatic = true;
      log.scrollTop = log.scrollHeight;
      window.requestAnimationFrame(function () { programmatic = false; });
    }
    if (log) {
      log.addEventListener("scroll", function () {
        if (programmatic || !follow) return;
        var atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 4;
        follow.checked = atEnd;  // scrolling up stops following; back at the end, it follows again
      });
      if (follow && follow.checked) toBottom();
    }
    if (follow) follow.addEventListener("change", function () { if (follow.checked) toBottom(); });
    var bottom = document.getElementById("log-bottom");
    if (bottom) bottom.addEventListener("click", function () { if (follow) follow.checked = true; toBottom(); });

    remember(true);
    if (finished()) return;
    var onState = function () { refresh(); };
    live = stream(
      "/api/v1/events?run=" + encodeURIComponent(runId),
      {
        progress: progress,
        "run.state": onState,
        "task.state": onState,
        "replication.state": onState,
        "alert.raised": onState,
        reset: onState
      },
      refresh  // every (re)connect: the panel whole, then the log after the last line shown
    );
  }

  // ---- the list ----------------------------------------------------------------------------
  function runList(table) {
    var samples = {}, pending = null;
    function reload() {
      if (pending) return;
      var url = "/runs/rows" + window.location.search;
      pending = Promise.resolve(replaceWith("#runs-rows", url))
        .catch(function () { /* app.js says so */ })
        .then(function () { pending = null; samples = {}; });
    }
    function shown(runId) {
      return document.querySelector('#runs-rows tr[data-run-id="' + cssEscape(runId) + '"]');
    }
    function progress(sample) {
      var row = shown(sample.run_id || "");
      if (!row) return;
      samples[sample.run_id] = samples[sample.run_id] || {};
      samples[sample.run_id][sample.key] = sample;
      var done = 0, total = 0, all = samples[sample.run_id];
      Object.keys(all).forEach(function (k) { done += all[k].bytes_done || 0; total += all[k].bytes_total || 0; });
      var bar = row.querySelector(".runbar");
      if (!bar) { reload(); return; }
      setBar(bar, total ? (done * 100) / total : 0, "");
    }
    function state(event) {
      // a run shown changed, or a new one belongs at the top of the first page
      if (shown(event.run_id || "") || window.location.search.indexOf("cursor=") < 0) reload();
    }
    stream("/api/v1/events?type=run,progress", { progress: progress, "run.state": state, reset: reload }, reload);
    void table;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var panel = document.getElementById("run-panel");
    if (panel) runPage(panel);
    var table = document.querySelector("[data-live-runs]");
    if (table) runList(table);
  });
})();
