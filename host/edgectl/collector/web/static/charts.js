// The device page's two charts (uPlot, vendored): latency p95 and reject rate per time
// bucket. The data comes from the page itself (<script type="application/json" id="series">),
// so the Content-Security-Policy can forbid inline scripts.
(function () {
  "use strict";
  function draw() {
    var el = document.getElementById("series");
    if (!el || typeof uPlot === "undefined") { return; }
    var s = JSON.parse(el.textContent);
    var t = s.t.map(function (x) { return x; });
    function chart(id, label, values, color) {
      var host = document.getElementById(id);
      if (!host) { return; }
      var width = Math.max(320, host.clientWidth || 480);
      var opts = {
        width: width, height: 220,
        series: [{}, { label: label, stroke: color, width: 2, spanGaps: false,
                       points: { show: true, size: 4 } }],
        axes: [{}, { size: 60 }],
        scales: { x: { time: true } }
      };
      host.setAttribute("data-points", String(values.filter(function (v) { return v !== null; }).length));
      new uPlot(opts, [t, values], host);
    }
    chart("chart-latency", "p95 ms", s.p95_ms, "#0b5cad");
    chart("chart-rejects", "reject %", s.reject_rate, "#b42318");
    document.body.setAttribute("data-charts", "drawn");
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
