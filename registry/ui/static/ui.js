// Cargobay console: the only script. Copy buttons put their data-copy text on the clipboard and say so.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest ? event.target.closest("button.copy") : null;
  if (!button) { return; }
  var text = button.getAttribute("data-copy") || "";
  var done = function (ok) {
    var label = button.textContent;
    button.textContent = ok ? "Copied" : "Copy failed";
    button.setAttribute("aria-live", "polite");
    window.setTimeout(function () { button.textContent = label; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
    return;
  }
  // Plain HTTP (no Clipboard API): select a hidden textarea and copy it.
  var area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  var ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  document.body.removeChild(area);
  done(ok);
});
