/* The channel form (settings/_channel_fields.html): show only the fields of the chosen type. */
(function () {
  "use strict";
  function apply(select) {
    var form = select.form;
    if (!form) return;
    form.querySelectorAll("[data-for-types]").forEach(function (group) {
      var types = group.getAttribute("data-for-types").split(" ");
      group.hidden = types.indexOf(select.value) < 0;
    });
  }
  document.querySelectorAll("select[data-channel-type]").forEach(function (select) {
    apply(select);
    select.addEventListener("change", function () { apply(select); });
  });
})();
