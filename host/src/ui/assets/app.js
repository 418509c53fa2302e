// wasm-connect dashboard: the live chart of a connector's rates (uPlot), the connectors
// filter, and the topic inspector's follow mode. Every page reads without this file.
(function () {
  "use strict";

  function every(ms, fn) { fn(); return setInterval(fn, ms); }

  // Records in/out/errors per second over the last 15 minutes, from the host's ring buffer.
  function chart(el) {
    var plot = null;
    every(2000, function () {
      fetch(el.dataset.src, { headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (body) {
          var s = body.samples || [];
          var data = [
            s.map(function (x) { return x.at; }),
            s.map(function (x) { return x.records_in; }),
            s.map(function (x) { return x.records_out; }),
            s.map(function (x) { return x.errors; }),
          ];
          if (!plot) {
            plot = new uPlot({
              width: Math.max(320, el.clientWidth || 800), height: 240,
              series: [{}, { label: "in/s", stroke: "#2563eb" },
                { label: "out/s", stroke: "#16a34a" }, { label: "errors/s", stroke: "#dc2626" }],
            }, data, el);
          } else {
            plot.setData(data);
          }
          el.dataset.points = String(s.length);
        })
        .catch(function () { el.dataset.error = "rates unavailable: reconnecting"; });
    });
  }

  // Hides the rows of the connectors table that do not contain the filter text.
  function filter(input) {
    input.addEventListener("input", function () {
      var needle = input.value.toLowerCase();
      document.querySelectorAll("[data-filterable] tbody tr").forEach(function (row) {
        row.hidden = needle !== "" && row.textContent.toLowerCase().indexOf(needle) < 0;
      });
    });
  }

  // Reloads the inspector's records while "follow" is checked.
  function inspector(el) {
    var follow = document.getElementById("follow");
    every(2000, function () {
      if (!follow || !follow.checked) { return; }
      fetch(el.dataset.src).then(function (r) { return r.json(); }).then(function (body) {
        var rows = (body.records || []).map(function (rec) {
          var tr = document.createElement("tr");
          [rec.offset, rec.timestamp, rec.key || "", rec.value, JSON.stringify(rec.headers)]
            .forEach(function (text) {
              var td = document.createElement("td");
              td.textContent = String(text);
              tr.appendChild(td);
            });
          return tr;
        });
        var tbody = el.querySelector("tbody");
        tbody.replaceChildren.apply(tbody, rows);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("rates-chart");
    if (el) { chart(el); }
    var input = document.getElementById("filter");
    if (input) { filter(input); }
    var insp = document.getElementById("inspector");
    if (insp) { inspector(insp); }
  });
})();
