// The status page's only script (served from the page's own origin, so the CSP needs no 'unsafe-inline').
// Every few seconds it asks the page's own URL for JSON ({"html", "title", "status", "observed_at"}: the
// sections rendered by the server from the same readings as the health endpoints, every name escaped there)
// and swaps them in; a failed or timed-out fetch marks the page as out of contact until the next success.
"use strict";
(function () {
  var main = document.getElementById("page");
  var contact = document.getElementById("contact");
  if (!main || !contact || !main.getAttribute("data-poll")) return;
  var url = main.getAttribute("data-poll");  // the page's own JSON (also when the page was served at {health})
  var every = 2000;
  var lostSince = null;
  var lastGood = new Date();

  function clock(d) { return d.toLocaleTimeString(); }

  function good(data) {
    main.innerHTML = data.html;
    document.title = data.title;
    document.body.setAttribute("data-status", data.status);
    document.body.classList.remove("lost");
    lostSince = null;
    lastGood = new Date();
    contact.textContent = "live · updated " + clock(lastGood) + " · every " + every / 1000 + " s";
  }

  function lost(reason) {
    if (lostSince === null) lostSince = new Date();
    document.body.classList.add("lost");
    contact.textContent = "CONTACT LOST since " + clock(lostSince) + " (" + reason + "); showing the readings of " +
      clock(lastGood) + "; retrying every " + every / 1000 + " s";
  }

  function poll() {
    var abort = new AbortController();
    var timer = setTimeout(function () { abort.abort(); }, every * 1.5);
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin",
                 signal: abort.signal })
      .then(function (response) {
        if (response.status === 401) throw new Error("not logged in any more: reload to log in");
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(good)
      .catch(function (error) { lost(error && error.name === "AbortError" ? "no answer" : String(error.message || error)); })
      .then(function () { clearTimeout(timer); setTimeout(poll, every); });
  }
  contact.textContent = "live · every " + every / 1000 + " s";
  setTimeout(poll, every);
})();
