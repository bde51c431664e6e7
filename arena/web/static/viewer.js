// The case viewer (arena/web/templates/viewer.html): slices are PNGs drawn on the server
// (arena/web/viewer.py); this script only picks which one. No framework, no build step, no inline code.
(function () {
  "use strict";
  var root = document.getElementById("viewer");
  if (!root) return;
  var AXIS = { axial: 0, coronal: 1, sagittal: 2 };
  var base = root.dataset.base;
  var img = document.getElementById("vw-img");
  var slider = document.getElementById("vw-slider");
  var indexLabel = document.getElementById("vw-index");
  var windowSel = document.getElementById("vw-window");
  var selA = document.getElementById("vw-a");
  var selB = document.getElementById("vw-b");
  var status = document.getElementById("vw-status");
  var scores = document.querySelector("#vw-scores tbody");
  var state = { view: "axial", index: {}, geometry: null, models: [], organs: null };
  // ?organ=ID (links from an entry's per-case list and the compare page): that organ alone, and once the
  // jump targets are in, the slice where model A disagrees most with the reference for it.
  var focus = new URLSearchParams(window.location.search).get("organ");

  function organBoxes() { return Array.prototype.slice.call(document.querySelectorAll("#vw-organs input")); }
  function shownOrgans() {
    return organBoxes().filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
  }
  function organName(id) {
    var box = organBoxes().filter(function (b) { return b.value === String(id); })[0];
    return box ? box.dataset.organ : String(id);
  }

  function params() {
    var p = new URLSearchParams();
    if (selA.value) p.set("a", selA.value);
    if (selB.value && selB.value !== selA.value) p.set("b", selB.value);
    return p;
  }

  function slices() { return state.geometry ? state.geometry.views[state.view].slices : 1; }

  function draw() {
    if (!state.geometry) return;
    var n = slices();
    var i = Math.max(0, Math.min(n - 1, state.index[state.view]));
    state.index[state.view] = i;
    slider.max = String(n - 1);
    slider.value = String(i);
    indexLabel.textContent = state.view + " " + (i + 1) + " / " + n;
    var p = params();
    p.set("view", state.view);
    p.set("i", String(i));
    p.set("window", windowSel.value);
    var boxes = organBoxes();
    if (shownOrgans().length !== boxes.length) p.set("organs", shownOrgans().join(","));
    img.dataset.pending = state.view + ":" + i;
    img.src = base + "/slice.png?" + p.toString();
  }

  img.addEventListener("load", function () {
    img.dataset.shown = img.dataset.pending || "";
    status.textContent = "";
  });
  img.addEventListener("error", function () { status.textContent = "this slice could not be loaded"; });

  function setIndex(i) { state.index[state.view] = i; draw(); }
  function step(d) { setIndex(state.index[state.view] + d); }

  function jump(view, index) {
    state.view = view;
    state.index[view] = index;
    markView();
    draw();
  }

  function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function jumpButton(text, title, onClick) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "small secondary";
    b.textContent = text;
    b.title = title;
    b.addEventListener("click", onClick);
    return b;
  }

  function fillScores() {
    scores.textContent = "";
    var shown = shownOrgans();
    if (!state.models.length) {
      var tr = document.createElement("tr");
      var td = cell("choose a model to see its scores and where it disagrees with the reference", "muted l");
      td.colSpan = 6;
      tr.appendChild(td);
      scores.appendChild(tr);
      return;
    }
    shown.forEach(function (id) {
      state.models.forEach(function (m) {
        var s = m.metrics[id] || {};
        var tr = document.createElement("tr");
        tr.appendChild(cell(organName(id), "l"));
        tr.appendChild(cell(m.role + " · " + m.team));
        tr.appendChild(cell(fmt(s.dice, 3)));
        tr.appendChild(cell(fmt(s.hd95, 2)));
        tr.appendChild(cell(fmt(s.nsd, 3)));
        var td = cell("", "l");
        var t = m.targets[id];
        if (t && t.disagreement && t.disagreement[state.view]) {
          td.appendChild(jumpButton("disagreement", "the " + state.view + " slice where " + m.role +
            " and the reference differ in most voxels (" + t.disagreement[state.view].voxels + ")", function () {
              jump(state.view, t.disagreement[state.view].index);
            }));
        }
        if (t && t.hd95) {
          td.appendChild(jumpButton("HD95 point", "a " + t.hd95.on + " boundary point " +
            t.hd95.distance_mm.toFixed(1) +
            " mm from the other contour (HD95 " + t.hd95.hd95_mm.toFixed(1) + " mm)", function () {
              jump(state.view, t.hd95.voxel[AXIS[state.view]]);
            }));
        }
        var w = m.worst[id];
        if (w && w.case !== undefined) {
          var a = document.createElement("a");
          a.textContent = "worst case (" + w.case + ", Dice " + Number(w.dice).toFixed(3) + ")";
          a.href = base.replace(/\/cases\/[^/]*$/, "/cases/" + encodeURIComponent(w.case)) + "/view?" +
            params().toString();
          a.className = "worst";
          td.appendChild(a);
        }
        tr.appendChild(td);
        scores.appendChild(tr);
      });
    });
  }

  function load() {
    status.textContent = "loading…";
    fetch(base + "/viewer.json?" + params().toString(), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        var first = !state.geometry;
        state.geometry = d.geometry;
        state.models = d.models;
        if (first) {
          Object.keys(AXIS).forEach(function (v) { state.index[v] = Math.floor(d.geometry.views[v].slices / 2); });
        }
        var q = params().toString();
        history.replaceState(null, "", base + "/view" + (q ? "?" + q : ""));
        state.models.forEach(function (m) { m.targets = {}; });
        fillScores();
        draw();
        if (!state.models.length) return null;
        var models = state.models;
        return fetch(base + "/targets.json?" + q, { credentials: "same-origin" })
          .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
          .then(function (t) {
            if (models !== state.models) return;  // another model was chosen meanwhile
            t.models.forEach(function (m, k) { models[k].targets = m.targets; });
            fillScores();
            var d = focus && models[0].targets[focus] && models[0].targets[focus].disagreement;
            focus = null;  // only on arrival
            if (d && d[state.view]) jump(state.view, d[state.view].index);
          });
      })
      .catch(function (e) { status.textContent = "could not load the case: " + e.message; });
  }

  function markView() {
    document.querySelectorAll("#vw-views [data-view]").forEach(function (b) {
      b.classList.toggle("on", b.dataset.view === state.view);
    });
  }

  document.querySelectorAll("#vw-views [data-view]").forEach(function (b) {
    b.addEventListener("click", function () { state.view = b.dataset.view; markView(); fillScores(); draw(); });
  });
  slider.addEventListener("input", function () { setIndex(parseInt(slider.value, 10)); });
  windowSel.addEventListener("change", draw);
  [selA, selB].forEach(function (s) { s.addEventListener("change", load); });
  organBoxes().forEach(function (b) { b.addEventListener("change", function () { fillScores(); draw(); }); });
  document.getElementById("vw-all").addEventListener("click", function () {
    organBoxes().forEach(function (b) { b.checked = true; }); fillScores(); draw();
  });
  document.getElementById("vw-none").addEventListener("click", function () {
    organBoxes().forEach(function (b) { b.checked = false; }); fillScores(); draw();
  });
  if (focus && organBoxes().some(function (b) { return b.value === focus; })) {
    organBoxes().forEach(function (b) { b.checked = b.value === focus; });
  } else {
    focus = null;
  }
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox"))) return;
    var d = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[e.key];
    if (d === undefined) return;
    e.preventDefault();
    step(d);
  });
  load();
})();

// Pathology tiles (viewer_tiles.html): the server draws the region asked for; this picks the region (zoom with
// the wheel or the buttons, pan by dragging), the model and the probability threshold.
(function () {
  "use strict";
  var root = document.getElementById("tile-viewer");
  if (!root) return;
  var base = root.dataset.base;
  var img = document.getElementById("tv-img");
  var frame = img.parentElement;
  var sel = document.getElementById("tv-a");
  var prob = document.getElementById("tv-p");
  var probLabel = document.getElementById("tv-p-value");
  var counts = document.getElementById("tv-counts");
  var tile = null;
  var view = { x: 0, y: 0, w: 1, h: 1 };

  function clamp() {
    view.w = Math.max(32, Math.min(tile.width, view.w));
    view.h = Math.max(32, Math.min(tile.height, view.h));
    view.x = Math.max(0, Math.min(tile.width - view.w, view.x));
    view.y = Math.max(0, Math.min(tile.height - view.h, view.y));
  }

  function query(extra) {
    var p = new URLSearchParams();
    if (sel.value) p.set("a", sel.value);
    p.set("p", prob.value);
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p.toString();
  }

  function draw() {
    if (!tile) return;
    clamp();
    var r = { x: Math.round(view.x), y: Math.round(view.y), w: Math.round(view.w), h: Math.round(view.h) };
    img.style.transform = "";
    img.dataset.region = [r.x, r.y, r.w, r.h].join(",");
    img.src = base + "/tile.png?" + query({ x: r.x, y: r.y, w: r.w, h: r.h, size: 900 });
  }

  function load() {
    probLabel.textContent = Number(prob.value).toFixed(2);
    fetch(base + "/tile.json?" + query(), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (d) {
        var first = !tile;
        tile = d;
        if (first) { view = { x: 0, y: 0, w: d.width, h: d.height }; }
        var c = d.counts;
        counts.textContent = d.model
          ? "at probability ≥ " + d.probability.toFixed(2) + ": " + c.hit + " of " + c.reference +
            " reference boxes found, " + c.missed + " missed; " + c.true_positive + " of " + c.predicted +
            " model boxes hit, " + c.false_positive + " false positive"
          : c.reference + " reference boxes";
        draw();
      })
      .catch(function (e) { counts.textContent = "could not load the tile: " + e.message; });
  }

  function zoom(factor, fx, fy) {  // fx, fy: the fixed point as a fraction of the frame
    var cx = view.x + view.w * fx, cy = view.y + view.h * fy;
    view.w /= factor; view.h /= factor;
    view.x = cx - view.w * fx; view.y = cy - view.h * fy;
    draw();
  }

  document.getElementById("tv-in").addEventListener("click", function () { zoom(2, 0.5, 0.5); });
  document.getElementById("tv-out").addEventListener("click", function () { zoom(0.5, 0.5, 0.5); });
  document.getElementById("tv-reset").addEventListener("click", function () {
    view = { x: 0, y: 0, w: tile.width, h: tile.height }; draw();
  });
  frame.addEventListener("wheel", function (e) {
    e.preventDefault();
    var b = frame.getBoundingClientRect();
    zoom(e.deltaY < 0 ? 1.5 : 1 / 1.5, (e.clientX - b.left) / b.width, (e.clientY - b.top) / b.height);
  }, { passive: false });
  var drag = null;
  frame.addEventListener("pointerdown", function (e) {
    drag = { x: e.clientX, y: e.clientY };
    frame.setPointerCapture(e.pointerId);
  });
  frame.addEventListener("pointermove", function (e) {
    if (!drag) return;
    img.style.transform = "translate(" + (e.clientX - drag.x) + "px," + (e.clientY - drag.y) + "px)";
  });
  frame.addEventListener("pointerup", function (e) {
    if (!drag) return;
    var b = frame.getBoundingClientRect();
    view.x -= (e.clientX - drag.x) * view.w / b.width;
    view.y -= (e.clientY - drag.y) * view.h / b.height;
    drag = null;
    draw();
  });
  sel.addEventListener("change", load);
  prob.addEventListener("change", load);
  prob.addEventListener("input", function () { probLabel.textContent = Number(prob.value).toFixed(2); });
  load();
})();
