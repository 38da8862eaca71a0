// Loaded by index.html before the modules: start the live feed and the road map while they load, since
// the snapshot is due on screen within 2 s of navigation and the hub may be busy. live.js and base-map.js
// adopt what is started here. A classic script, not inline: the page's policy (CSP) runs no inline script.
// The feed is opened with a single-use ticket, never with the token in the URL.
(function () {
  var early = window.fieldhubEarly = { messages: [] };
  try {
    var token = new URLSearchParams(location.search).get("token") || localStorage.getItem("fieldhub.token");
    if (!token) return;
    var auth = { Authorization: "Bearer " + token };
    // Resolves with the open(ing) WebSocket, or null: live.js then connects as usual (and sees any 401).
    early.live = fetch("/api/v1/live/ticket", { method: "POST", headers: auth })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body || !body.ticket) return null;
        var ws = new WebSocket((location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host +
          "/api/v1/live?ticket=" + encodeURIComponent(body.ticket));
        ws.onmessage = function (ev) { early.messages.push(ev.data); };
        ws.onclose = function (ev) { early.closed = ev; };
        return ws;
      })
      .catch(function () { return null; });
    var json = function (path) {
      return fetch(path, { headers: auth })
        .then(function (r) { return r.ok ? r.json() : null; }).catch(function () { return null; });
    };
    early.map = json("/api/v1/map");
    early.mapConfig = json("/api/v1/map/config");
  } catch (e) { /* no storage or no WebSocket yet: the modules connect as usual */ }
})();
