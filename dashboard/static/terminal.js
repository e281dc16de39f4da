// docker-agent web terminal: xterm.js (Debian's libjs-xterm) on a WebSocket to a login shell in the
// agent. Keystrokes go out as binary frames; resizes as {"resize":[cols,rows]}; output comes back as
// binary frames, and {"exit": "..."} when the shell ends.
"use strict";

(function () {
  const box = document.getElementById("terminal");
  const status = document.getElementById("term-status");
  if (!box || typeof Terminal === "undefined") {
    if (status) { status.textContent = "xterm.js missing"; status.className = "badge bad"; }
    return;
  }
  if (typeof fit !== "undefined" && Terminal.applyAddon) Terminal.applyAddon(fit);
  // The DOM renderer keeps the screen as text: selectable, readable by screen readers and by tests.
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000, rendererType: "dom" });
  term.open(box);
  if (term.fit) term.fit();
  window.dockerAgentTerminal = term;

  const setStatus = (text, cls) => { if (status) { status.textContent = text; status.className = "badge " + cls; } };
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const url = scheme + location.host + box.dataset.ws + "&cols=" + term.cols + "&rows=" + term.rows;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  ws.onopen = () => { setStatus("● connected", "ok"); term.focus(); };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.exit !== undefined) {
        term.write("\r\n[session ended: " + msg.exit + "]\r\n");
        setStatus("■ ended", "off");
      }
      return;
    }
    term.write(decoder.decode(new Uint8Array(event.data), { stream: true }));
  };
  ws.onclose = () => { if (!status || status.textContent.indexOf("ended") < 0) setStatus("⊘ disconnected", "off"); };

  term.on("data", (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
  term.on("resize", (size) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [size.cols, size.rows] }));
  });
  window.addEventListener("resize", () => { if (term.fit) term.fit(); });
  // Leaving the page closes the socket at once (the hub then hangs the shell up); a page kept in the
  // back/forward cache would otherwise hold it open.
  window.addEventListener("pagehide", () => ws.close(1000, "page closed"));
})();
