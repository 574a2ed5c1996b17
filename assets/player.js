// The web console's recording player: plays the asciicast the page names
// (data-cast) with the vendored asciinema-player. The page's only script.
(function () {
  var el = document.getElementById("player");
  if (!el || !window.AsciinemaPlayer) { return; }
  window.AsciinemaPlayer.create(el.getAttribute("data-cast"), el, {
    fit: "width",
    idleTimeLimit: 2,
    autoPlay: el.getAttribute("data-autoplay") === "1"
  });
})();
