// The web UI's own script: small, no build step. Pages work without it where they can.
(function () {
  "use strict";

  // Every htmx request repeats the session's CSRF token (forms carry it as a field too).
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) event.detail.headers["X-CSRF-Token"] = meta.content;
  });

  // An htmx request that failed says so, with the server's reason, instead of doing nothing.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr, text = xhr.statusText;
    try { text = JSON.parse(xhr.responseText).detail || text; } catch (e) { /* an HTML page */ }
    toast("Error " + xhr.status + ": " + text, "error");
  });
  document.addEventListener("htmx:sendError", function () {
    toast("The gateway did not answer: is vbm running?", "error");
  });

  function toast(message, kind) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var item = document.createElement("p");
    item.className = "toast " + (kind || "info");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 8000);
  }
  window.vbmToast = toast;

  // Times: <time datetime="...Z"> shows local time ("3 h ago" within a week), UTC as its title.
  function ago(seconds) {
    var units = [["d", 86400], ["h", 3600], ["min", 60]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) {
        var n = Math.round(seconds / units[i][1]);
        return n >= 0 ? n + " " + units[i][0] + " ago" : "in " + -n + " " + units[i][0];
      }
    }
    return seconds >= 0 ? "just now" : "in under a minute";
  }
  function showTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.title = when.toISOString().replace(".000Z", "Z").replace("T", " ") + " (UTC)";
      var seconds = (Date.now() - when.getTime()) / 1000;
      el.textContent = Math.abs(seconds) < 7 * 86400 && !el.hasAttribute("data-absolute")
        ? ago(seconds) : when.toLocaleString();
    });
  }
  window.vbmShowTimes = showTimes;  // for HTML a page's own script adds
  document.addEventListener("DOMContentLoaded", function () { showTimes(document); });
  document.addEventListener("htmx:afterSettle", function (event) { showTimes(event.target); });

  // The theme toggle: light <-> dark, kept across reloads.
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-theme-toggle]")) return;
    var root = document.documentElement;
    var dark = root.dataset.theme ? root.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    root.dataset.theme = dark ? "light" : "dark";
    try { localStorage.setItem("vbm-theme", root.dataset.theme); } catch (e) { /* not kept */ }
  });

  // An error summary takes the focus, so a screen reader reads it first.
  document.addEventListener("DOMContentLoaded", function () {
    var first = document.querySelector("[data-autofocus]");
    if (first) first.focus();
  });

  // Confirmations typed, not clicked: the button stays disabled until the name matches.
  document.addEventListener("input", function (event) {
    var field = event.target.closest("[data-confirm-name]");
    if (!field) return;
    var button = document.getElementById(field.getAttribute("data-confirm-button"));
    if (button) button.disabled = field.value !== field.getAttribute("data-confirm-name");
  });
})();
