// Live counts on the overview: one fetch of /api/live every 5 s; no framework.
(function () {
  function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%"; }
  function render(data) {
    var box = document.getElementById("live");
    if (!box) return;
    Object.keys(data.stations).forEach(function (name) {
      var s = data.stations[name];
      var tile = box.querySelector('[data-station="' + CSS.escape(name) + '"]');
      if (!tile) {
        tile = document.createElement("div");
        tile.className = "tile";
        tile.dataset.station = name;
        var h = document.createElement("h3");
        h.textContent = name;
        tile.appendChild(h);
        tile.appendChild(document.createElement("p"));
        box.appendChild(tile);
      }
      tile.querySelector("p").textContent =
        s.parts + " parts · " + s.PASS + " pass · " + s.FAIL + " fail · " + s.ERROR + " error · " +
        s.NOT_INSPECTED + " not inspected · yield " + pct(s.yield);
      tile.classList.add("loaded");
    });
    box.querySelectorAll(".tile:not(.loaded) p").forEach(function (p) { p.textContent = "no parts in the last hour"; });
    var at = document.getElementById("live-at");
    if (at) at.textContent = "updated " + data.at.replace("T", " ").slice(0, 19) + " UTC";
  }
  function tick() {
    fetch("/api/live?minutes=60", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d) render(d); })
      .catch(function () {});
  }
  tick();
  setInterval(tick, 5000);
})();
