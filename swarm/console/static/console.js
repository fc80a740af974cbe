// The throughput plot of a run's page: messages done a second, per stage, re-read while the run runs.
(function () {
  "use strict";
  var COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
  var EVERY_MS = 2000;

  function options(stages, width) {
    var series = [{}];
    stages.forEach(function (stage, i) {
      series.push({label: stage, stroke: COLOURS[i % COLOURS.length], width: 2, points: {show: false}});
    });
    return {width: width, height: 260, series: series, axes: [{}, {label: "done/s"}], scales: {x: {time: true}}};
  }

  function start(el) {
    var plot = null, shape = "";
    function draw(doc) {
      var key = doc.stages.join("\u0000");
      if (plot === null || key !== shape) {
        if (plot !== null) { plot.destroy(); }
        el.textContent = "";
        plot = new uPlot(options(doc.stages, el.clientWidth || 800), doc.data, el);
        shape = key;
      } else {
        plot.setData(doc.data);
      }
      el.dataset.points = String(doc.data[0].length);
      el.dataset.stages = String(doc.stages.length);
    }
    function load() {
      fetch(el.dataset.src, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (doc) {
          draw(doc);
          if (doc.running) { setTimeout(load, EVERY_MS); }
        })
        .catch(function (err) {
          el.dataset.error = String(err);
          setTimeout(load, EVERY_MS * 2);
        });
    }
    load();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("throughput");
    if (el && window.uPlot) { start(el); }
  });
})();
