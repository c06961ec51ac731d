// The backup calendar (ui/calendar.py): the arrow keys move between days (the month) or between
// a VM's days and VMs (the week), Home/End to a row's ends; an opened day keeps the focus.
(function () {
  "use strict";
  var grid = document.querySelector("[data-cal-grid]");
  if (!grid) return;
  var cells = Array.prototype.slice.call(grid.querySelectorAll("[data-cell]"));
  function at(row, col) {
    return grid.querySelector('[data-cell][data-row="' + row + '"][data-col="' + col + '"]');
  }
  function moveTo(target) {
    if (target) target.focus();
    return !!target;
  }
  grid.addEventListener("keydown", function (event) {
    var cell = event.target.closest("[data-cell]");
    if (!cell) return;
    var index = cells.indexOf(cell);
    var row = Number(cell.dataset.row), col = Number(cell.dataset.col);
    var monthly = grid.classList.contains("cal-month");
    var target = null;
    switch (event.key) {
      case "ArrowLeft": target = monthly ? cells[index - 1] : at(row, col - 1); break;
      case "ArrowRight": target = monthly ? cells[index + 1] : at(row, col + 1); break;
      case "ArrowUp": target = at(row - 1, col); break;
      case "ArrowDown": target = at(row + 1, col); break;
      case "Home": target = monthly ? cells[0] : at(row, 0); break;
      case "End": target = monthly ? cells[cells.length - 1] : at(row, 6); break;
      default: return;
    }
    if (moveTo(target) || event.key.indexOf("Arrow") === 0) event.preventDefault();
  });
  // after the page's load (the jump to #day-panel would take the focus back to the page)
  window.addEventListener("load", function () {
    var open = grid.querySelector("td.open [data-cell]");
    if (open) open.focus({ preventScroll: true });
  });
})();
