// metergate's own (not vendored): the Copy button beside a unique id.
// Without JavaScript the button stays hidden and the id is selectable text.
"use strict";
(function () {
  function select(el, say) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    say("Selected: press Ctrl+C");
  }
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source) {
      continue;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      const say = function (text) {
        button.textContent = text;
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.textContent).then(
          function () {
            say("Copied");
          },
          function () {
            select(source, say);
          }
        );
      } else {
        select(source, say);
      }
    });
  }
})();
