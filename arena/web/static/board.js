// The board (arena/web/templates/_board.html): sortable columns and sticky first columns. The board's HTML is
// rendered once per result version and shared by every visitor; this script only reorders its rows in the
// page. No framework, no build step, no inline code.
//   <th data-sort="num|text" data-better="high|low">  a sortable column; a cell's number is the one its text
//                                                     starts with, as shown ("–": no value, always last)
//   .s1 .s2 .s3                                      the sticky first columns (rank, team, submission)
(function () {
  "use strict";

  function sortable(table) {
    var head = table.tHead && table.tHead.rows[0], body = table.tBodies[0];
    if (!head || !body) return;
    var ths = Array.prototype.slice.call(head.cells);

    // Sticky columns: the second and third start where the ones before them end.
    function stick() {
      var s1 = head.querySelector(".s1"), s2 = head.querySelector(".s2");
      if (!s1 || !s2) return;
      table.style.setProperty("--board-l2", s1.offsetWidth + "px");
      table.style.setProperty("--board-l3", (s1.offsetWidth + s2.offsetWidth) + "px");
    }
    stick();
    window.addEventListener("resize", stick);
    window.addEventListener("load", stick);

    function key(cell, numeric) {
      if (!cell) return null;
      var text = cell.textContent.trim();
      if (numeric) {  // "0.853 3 pen.", "2–5 n < 10: …": the leading number (the shown value, a lower bound)
        var v = parseFloat(text);
        return isNaN(v) ? null : v;
      }
      return text === "" || text === "–" ? null : text.toLowerCase();
    }

    function sortBy(th) {
      var col = ths.indexOf(th), numeric = th.getAttribute("data-sort") === "num";
      var now = th.getAttribute("aria-sort"), asc;
      if (now === "ascending") asc = false;
      else if (now === "descending") asc = true;
      else asc = !(numeric && th.getAttribute("data-better") === "high");  // first click: best first
      ths.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var rows = Array.prototype.slice.call(body.rows).map(function (r, i) {
        return { row: r, i: i, k: key(r.cells[col], numeric) };
      });
      rows.sort(function (a, b) {
        if (a.k === null || b.k === null) {  // no value: last, whichever the direction
          return a.k === b.k ? a.i - b.i : (a.k === null ? 1 : -1);
        }
        var d = numeric ? a.k - b.k : a.k.localeCompare(b.k);
        return d === 0 ? a.i - b.i : (asc ? d : -d);
      });
      rows.forEach(function (r) { body.appendChild(r.row); });
    }

    ths.forEach(function (th) {
      if (!th.hasAttribute("data-sort")) return;
      th.tabIndex = 0;
      th.title = (th.title ? th.title + " · " : "") + "click to sort";
      th.addEventListener("click", function () { sortBy(th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
      });
    });
  }

  document.querySelectorAll("table.board").forEach(sortable);
})();
