// Runs before the page paints: the theme chosen with the toggle (kept in localStorage), else
// the system's (prefers-color-scheme, in app.css).
(function () {
  try {
    var chosen = localStorage.getItem("vbm-theme");
    if (chosen === "light" || chosen === "dark") document.documentElement.dataset.theme = chosen;
  } catch (e) { /* storage refused: the system's theme */ }
})();
