// Arena's page behaviour. Pages carry no inline JavaScript (the Content-Security-Policy allows scripts
// from this origin's files only); what a page needs is declared with data- attributes:
//   <form data-confirm="Question?">                  ask before submitting
//   <form id="upload-form" data-upload-url data-csrf> the Submit page's upload with a progress bar
//   <div data-poll-url data-evaluations="N">          the submission page's live status
(function () {
  "use strict";

  function byId(id) { return document.getElementById(id); }

  // Confirm before a form is sent; the question is the attribute's text, never code.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
    });
  });

  // The upload: the archive itself is the request body (not a multipart form), streamed with progress.
  function upload(form) {
    var base = form.getAttribute("data-upload-url"), csrf = form.getAttribute("data-csrf");
    var btn = byId("upload-button"), fileInput = byId("file");
    function fmt(n) { return n > 1e9 ? (n / 1e9).toFixed(2) + " GB" : (n / 1e6).toFixed(1) + " MB"; }
    function fail(msg) { var e = byId("upload-error"); e.textContent = msg; e.hidden = false; btn.disabled = false; }
    function send() {
      var f = fileInput.files[0];
      byId("upload-error").hidden = true;
      if (!f) { fail("Choose the image archive first."); return; }
      var maxBytes = Number(form.getAttribute("data-max-bytes")), cap = form.getAttribute("data-cap");
      if (maxBytes && f.size > maxBytes) {  // refused here, before a byte is sent
        fail(f.name + " is " + fmt(f.size) + ", over this server's upload limit of " + cap +
             ". Make the image smaller (a slimmer base image, no build caches or training data in it; " +
             "large weights can go into a model archive) and upload again.");
        return;
      }
      var phase = byId("phase").value, label = byId("label").value;
      var url = base.replace("PHASE", encodeURIComponent(phase)) + "?filename=" + encodeURIComponent(f.name) +
        "&label=" + encodeURIComponent(label);
      var xhr = new XMLHttpRequest(), t0 = Date.now();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrf);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      byId("progress").hidden = false; btn.disabled = true;
      xhr.upload.onprogress = function (e) {
        if (!e.lengthComputable) return;
        var pct = 100 * e.loaded / e.total, s = (Date.now() - t0) / 1000, rate = e.loaded / Math.max(s, 0.001);
        byId("progress-bar").style.width = pct.toFixed(1) + "%";
        byId("progress-text").textContent = fmt(e.loaded) + " of " + fmt(e.total) + " (" + pct.toFixed(0) + "%) · " +
          fmt(rate) + "/s" + (e.loaded < e.total ? " · about " + Math.ceil((e.total - e.loaded) / rate) + " s left"
                                                 : " · checking the archive…");
      };
      xhr.onload = function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (err) { /* not JSON: say the status */ }
        if (xhr.status === 202 && body.url) {
          byId("progress-text").textContent = "Uploaded: submission " + body.id + ". Opening it…";
          location.href = body.url;
        } else if (xhr.status === 413) {
          fail("The server refused the archive as too large (its limit is " + form.getAttribute("data-cap") + ").");
        } else { fail(body.error || ("Upload refused (HTTP " + xhr.status + ")")); }
      };
      xhr.onerror = function () { fail("The upload was interrupted (network error). Try again."); };
      xhr.send(f);
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); send(); });
    btn.addEventListener("click", send);
  }

  // Live status: poll the JSON API (the session cookie authenticates GETs); reload when it finishes.
  function poll(el) {
    var url = el.getAttribute("data-poll-url"), known = parseInt(el.getAttribute("data-evaluations"), 10);
    function tick() {
      fetch(url, {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(function (s) {
        var badge = byId("status");
        badge.textContent = s.status; badge.className = "badge " + s.status.split(" ")[0];
        s.evaluations.forEach(function (ev) {
          var b = document.querySelector('[data-ev-bar="' + ev.id + '"]'),
              d = document.querySelector('[data-ev-done="' + ev.id + '"]'),
              st = document.querySelector('[data-ev-status="' + ev.id + '"]');
          if (b && ev.cases_total) b.style.width = Math.round(100 * ev.cases_done / ev.cases_total) + "%";
          if (d) d.textContent = ev.cases_done + "/" + ev.cases_total;
          if (st) { st.textContent = ev.status + (ev.progress ? " (" + ev.progress + ")" : ""); st.className = "badge " + ev.status; }
        });
        var st = s.status.split(" ")[0];
        if (s.evaluations.length !== known || ["succeeded", "failed", "cancelled"].indexOf(st) >= 0) { location.reload(); return; }
        // a case scored since the page was drawn: draw it again, so the per-case tables grow while it runs
        var grew = s.evaluations.some(function (ev) {
          var line = document.querySelector('[data-ev-progress="' + ev.id + '"]');
          return line && ev.cases && ev.cases.length > parseInt(line.getAttribute("data-cases"), 10);
        });
        if (grew) { location.reload(); return; }
        setTimeout(tick, 2000);
      }).catch(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, 2000);
  }

  var uploadForm = byId("upload-form");
  if (uploadForm) upload(uploadForm);
  var live = document.querySelector("[data-poll-url]");
  if (live) poll(live);
})();
