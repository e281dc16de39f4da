// docker-agent dashboard: live regions. Every page works without this script (reload to see
// changes); with it, a page that names a live stream refreshes its [data-region] parts in place when
// the hub says something changed, and a running task's output is appended as it arrives.
"use strict";

(function () {
  const main = document.getElementById("main");
  if (!main) return;

  let refreshing = false;
  let again = false;

  // Re-fetches this page's <main> and swaps in each region; a page whose set of regions changed (an
  // agent that now exists, one that is gone) is swapped whole.
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const response = await fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" });
      if (response.redirected || response.status === 401) { location.reload(); return; }
      const html = await response.text();
      const doc = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
      const fresh = doc.body.firstElementChild;
      const names = (root) => Array.from(root.querySelectorAll("[data-region]")).map((e) => e.dataset.region).join(",");
      if (names(fresh) !== names(main)) {
        main.innerHTML = fresh.innerHTML;
        startTaskOutput();
      } else {
        for (const region of fresh.querySelectorAll("[data-region]")) {
          const here = main.querySelector('[data-region="' + region.dataset.region + '"]');
          if (here && here.innerHTML !== region.innerHTML) here.innerHTML = region.innerHTML;
        }
      }
    } catch (e) {
      // The hub restarted or the network dropped: the next change (or a reload) catches up.
    } finally {
      refreshing = false;
      if (again) { again = false; setTimeout(refresh, 300); }
    }
  }

  const dot = document.getElementById("live-dot");
  const live = main.dataset.live;
  if (live) {
    const source = new EventSource(live);
    source.addEventListener("hello", () => { if (dot) dot.hidden = false; });
    source.addEventListener("change", refresh);
    source.onerror = () => { if (dot) dot.hidden = true; };
  }

  let outputRefresh = null;

  // A running task's output, appended as text (never as markup).
  function startTaskOutput() {
    const out = document.getElementById("output");
    if (!out || !out.dataset.taskLive || out.dataset.started) return;
    out.dataset.started = "1";
    const source = new EventSource(out.dataset.taskLive);
    if (dot) source.addEventListener("open", () => { dot.hidden = false; });
    source.addEventListener("output", (event) => {
      const chunk = JSON.parse(event.data);
      const span = document.createElement("span");
      span.className = chunk.class === "err" ? "err" : "out";
      span.textContent = chunk.text;
      const atBottom = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.appendChild(span);
      if (atBottom) out.scrollTop = out.scrollHeight;
      // The state line (running, size) needs no more than one refresh every few seconds.
      if (!outputRefresh) outputRefresh = setTimeout(() => { outputRefresh = null; refresh(); }, 3000);
    });
    source.addEventListener("end", () => {
      source.close();
      out.dataset.ended = "1";
      refresh();
    });
  }
  startTaskOutput();
})();
