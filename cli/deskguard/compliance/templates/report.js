// The HTML report's host list (deskguard/compliance/html.py): filters and pages the embedded data in the
// page. Data becomes text nodes only, never markup. The filters and the page live in location.hash.
"use strict";
(function () {
  var PAGE = 50;
  var WORDS = {p: "pass", w: "pass with a warning", f: "fail", e: "error", v: "waived", n: "not applicable",
               c: "not checked"};
  var data = JSON.parse(document.getElementById("hosts-data").textContent);
  var controls = data.controls;
  var query = document.getElementById("host-query");
  var state = document.getElementById("host-state");
  var control = document.getElementById("host-control");
  var body = document.querySelector("#host-list tbody");
  var pager = document.getElementById("host-pager");
  var page = 1;

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  // host: [name, managed, state, compliant, score, letters, source, evidence_at, message, details]
  function stateWord(h) {
    var word = h[2] !== "ok" ? h[2] : (h[3] ? "compliant" : "NOT compliant");
    if (h[2] === "ok" && h[5].indexOf("w") >= 0) word += ", with warnings";
    if (h[6] === "checkin" && h[2] === "ok") word += " (check-in " + h[7] + ")";
    if (!h[1]) word += " (never onboarded)";
    return word;
  }
  function notPassing(h) {
    var out = [];
    for (var i = 0; i < controls.length; i++) {
      var c = h[5].charAt(i);
      if (c === "f" || c === "e" || c === "w" || c === "c") out.push(controls[i] + " " + WORDS[c]);
    }
    return out.length ? out.join("; ") : (h[8] || "-");
  }
  function keep(h) {
    var q = query.value.trim().toLowerCase();
    if (q && h[0].toLowerCase().indexOf(q) < 0) return false;
    var s = state.value;
    if (s === "not-compliant" && !(h[2] === "ok" && !h[3])) return false;
    if (s === "unreachable" && h[2] === "ok") return false;
    if (s === "warnings" && h[5].indexOf("w") < 0) return false;
    if (s === "compliant" && !(h[2] === "ok" && h[3])) return false;
    if (s === "never" && h[1]) return false;
    if (control.value) {
      var c = h[5].charAt(controls.indexOf(control.value));
      if (c !== "f" && c !== "e") return false;
    }
    return true;
  }
  function detail(h) {
    var row = el("tr", undefined, "detail");
    var cell = el("td");
    cell.colSpan = 4;
    if (h[8]) cell.appendChild(el("p", h[8]));
    var t = el("table");
    var head = el("tr");
    ["control", "status", "evidence", "observed", "expected"].forEach(function (w) { head.appendChild(el("th", w)); });
    t.appendChild(head);
    for (var i = 0; i < controls.length; i++) {
      var c = h[5].charAt(i);
      if (c === "-") continue;
      var d = h[9][controls[i]];
      var r = el("tr");
      r.appendChild(el("td", controls[i] + (data.titles[controls[i]] ? " " + data.titles[controls[i]] : "")));
      r.appendChild(el("td", WORDS[c], d ? d[0] : (c === "p" ? "pass" : "not_applicable")));
      r.appendChild(el("td", d ? (d[1].join("; ") || "-") : "-"));
      r.appendChild(el("td", d ? d[2] : ""));
      r.appendChild(el("td", d ? d[3] : ""));
      t.appendChild(r);
    }
    cell.appendChild(t);
    row.appendChild(cell);
    return row;
  }
  function draw() {
    var kept = data.hosts.filter(keep);
    var pages = Math.max(1, Math.ceil(kept.length / PAGE));
    page = Math.min(Math.max(1, page), pages);
    body.textContent = "";
    kept.slice((page - 1) * PAGE, page * PAGE).forEach(function (h) {
      var r = el("tr", undefined, "host");
      r.appendChild(el("td", h[0]));
      r.appendChild(el("td", stateWord(h), h[2] !== "ok" ? h[2] : (h[3] ? "pass" : "fail")));
      r.appendChild(el("td", h[4] === null ? "-" : Math.round(h[4]) + "%"));
      r.appendChild(el("td", notPassing(h)));
      r.addEventListener("click", function () {
        var next = r.nextSibling;
        if (next && next.className === "detail") body.removeChild(next); else body.insertBefore(detail(h), next);
      });
      body.appendChild(r);
    });
    pager.textContent = "";
    var first = kept.length ? (page - 1) * PAGE + 1 : 0;
    pager.appendChild(el("span", "hosts " + first + "–" + Math.min(page * PAGE, kept.length) + " of " +
                         kept.length + " shown by the filters (" + data.hosts.length + " in the run); page " +
                         page + " of " + pages));
    [["previous", page - 1], ["next", page + 1]].forEach(function (b) {
      var button = el("button", b[0]);
      button.disabled = b[1] < 1 || b[1] > pages;
      button.addEventListener("click", function () { page = b[1]; save(); draw(); });
      pager.appendChild(button);
    });
  }
  function save() {
    var parts = [];
    if (query.value) parts.push("q=" + encodeURIComponent(query.value));
    if (state.value !== "all") parts.push("state=" + state.value);
    if (control.value) parts.push("control=" + encodeURIComponent(control.value));
    if (page > 1) parts.push("page=" + page);
    history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname + location.search);
  }
  function load() {
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("="), k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1));
      if (k === "q") query.value = v;
      if (k === "state" && Array.prototype.some.call(state.options, function (o) { return o.value === v; })) {
        state.value = v;
      }
      if (k === "control" && controls.indexOf(v) >= 0) control.value = v;
      if (k === "page") page = parseInt(v, 10) || 1;
    });
  }
  controls.forEach(function (c) { control.appendChild(el("option", c + " failing", undefined)).value = c; });
  [query, state, control].forEach(function (input) {
    input.addEventListener("input", function () { page = 1; save(); draw(); });
  });
  load();
  draw();
})();
