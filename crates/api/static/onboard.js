// The onboarding page is rendered on the server for its current step; this script only notices
// when the step (or the QR code, or the pairing status) changes and reloads, counts down the
// payment's expiry, and marks a submitted form as sent. Without it the page refreshes itself.
(function () {
  "use strict";
  var root = document.getElementById("onboard");
  if (!root) return;
  var shown = { step: root.dataset.step, pairing: root.dataset.pairing, qr: root.dataset.qr };
  var final = ["ready", "failed", "refunded", "expired"];

  function poll() {
    fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (status) {
        if (!status) return;
        var now = { step: status.step, pairing: status.pairing_status || "", qr: status.qr_content || "" };
        if (now.step !== shown.step || now.pairing !== shown.pairing || now.qr !== shown.qr) {
          location.reload();
        }
      })
      .catch(function () {})
      .then(function () {
        if (final.indexOf(shown.step) < 0) setTimeout(poll, 1500);
      });
  }
  setTimeout(poll, 1500);

  var countdown = document.getElementById("countdown");
  if (countdown) {
    var end = Date.parse(countdown.getAttribute("datetime"));
    var tick = function () {
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      var minutes = Math.floor(left / 60), seconds = left % 60;
      countdown.textContent = minutes + ":" + (seconds < 10 ? "0" : "") + seconds;
      if (left > 0) setTimeout(tick, 1000);
    };
    tick();
  }

  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit]");
      if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
    });
  });
})();
