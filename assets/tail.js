// metergate's own (not vendored): the Audit page's live tail. Events come
// from /audit/stream as server-sent events, one JSON event a line, and are
// added to the table newest first, as text only (textContent: an event's
// fields never become HTML). The server ends the tail when the session or
// the permission ends, and says why.
"use strict";
(function () {
  const rows = document.getElementById("tail-rows");
  const status = document.getElementById("tail-status");
  const KEEP = 500;
  // A reconnect starts with the latest events again: those shown are skipped.
  let last = -1;
  const source = new EventSource("/audit/stream");
  function cell(tr, text) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    tr.appendChild(td);
  }
  source.addEventListener("open", function () {
    status.textContent = "live";
  });
  source.addEventListener("events", function (m) {
    for (const line of m.data.split("\n")) {
      let e;
      try {
        e = JSON.parse(line);
      } catch (_) {
        continue;
      }
      if (typeof e.seq !== "number" || e.seq <= last) {
        continue;
      }
      last = e.seq;
      const tr = document.createElement("tr");
      cell(tr, e.seq);
      cell(tr, new Date(e.time / 1000).toISOString());
      cell(tr, e.code);
      cell(tr, e.outcome);
      cell(tr, e.principal);
      cell(tr, e.door);
      cell(tr, e.meter);
      cell(tr, e.action && e.reason ? e.action + ": " + e.reason : e.action || e.reason);
      rows.insertBefore(tr, rows.firstChild);
    }
    while (rows.rows.length > KEEP) {
      rows.deleteRow(-1);
    }
  });
  source.addEventListener("end", function (m) {
    status.textContent = "stopped: " + m.data;
    source.close();
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      status.textContent = "stopped: the connection was refused (reload the page)";
    } else {
      status.textContent = "reconnecting…";
    }
  });
})();
