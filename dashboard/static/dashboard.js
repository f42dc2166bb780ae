/* Dockyard dashboard: the little script the pages need. No build step, no framework.
 *
 * Rule: data from the server is only ever put on the page as text (textContent, uPlot's
 * canvas), never as markup; the page's CSP allows no inline script anyway.
 */
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }

  // ------------------------------------------------------------ sign-in link
  // The link's secret is in the fragment (never sent to a server): post it, then forget it.
  function signIn() {
    const form = $("#login");
    if (!form) return;
    const secret = location.hash.replace(/^#/, "");
    if (!secret) return;
    history.replaceState(null, "", location.pathname);
    $("#login-token").value = secret;
    $("#login-status").textContent = "Signing you in…";
    form.submit();
  }

  // ------------------------------------------------------------ a push as it happens
  // Polls the app's latest build log from where it left off; a build that starts while the
  // page is open is followed from its first line, and its end is shown too.
  function followBuilds() {
    const panel = $("#push");
    if (!panel) return;
    const app = encodeURIComponent(panel.dataset.app);
    const pre = $("#build-log");
    let build = null, offset = 0, following = false;
    async function poll() {
      let next = 1000;
      try {
        const res = await getJSON(`/api/apps/${app}/builds/latest/log?offset=${offset}`);
        if (res.build !== build) {
          build = res.build; offset = 0; pre.textContent = ""; following = res.running;
          if (following) next = 0;  // read it again from its first byte
        } else if (following) {
          show(res);
          following = res.running;
        } else {
          next = 2000;
        }
      } catch (e) {
        next = 5000;
      } finally {
        setTimeout(poll, next);
      }
    }
    function show(res) {
      panel.hidden = false;
      if (res.text) {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.appendChild(document.createTextNode(res.text));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      offset = res.offset;
      $("#push-title").textContent = `build ${res.build}: ${res.status}`;
      panel.dataset.build = res.build;
      panel.dataset.status = res.status;
    }
    poll();
  }

  // ------------------------------------------------------------ config values on demand
  function revealConfig() {
    const table = $("table.config");
    if (!table) return;
    const app = table.dataset.app;
    for (const button of $$("button[data-reveal]", table)) {
      button.addEventListener("click", async () => {
        const key = button.dataset.reveal;
        const cell = $$("span.value", table).find((s) => s.dataset.key === key);
        if (button.dataset.shown) {
          cell.textContent = "hidden"; cell.classList.add("muted");
          button.textContent = "Show"; delete button.dataset.shown;
          return;
        }
        try {
          const res = await getJSON(`/api/apps/${encodeURIComponent(app)}/config/${encodeURIComponent(key)}`);
          cell.textContent = res.value; cell.classList.remove("muted");
          button.textContent = "Hide"; button.dataset.shown = "1";
        } catch (e) {
          cell.textContent = "(refused)";
        }
      });
    }
  }

  // ------------------------------------------------------------ charts (uPlot)
  const COLORS = ["#1f6feb", "#1a7f37", "#8250df", "#bf8700", "#cf222e", "#0e7490", "#9a3412", "#6e7781"];

  function deployMarkers(getDeploys) {
    return {
      hooks: {
        draw: [(u) => {
          const ctx = u.ctx;
          const { top, height } = u.bbox;
          ctx.save();
          ctx.strokeStyle = "#8c959f";
          ctx.fillStyle = "#57606a";
          ctx.setLineDash([4, 4]);
          ctx.lineWidth = 1 * devicePixelRatio;
          ctx.font = `${10 * devicePixelRatio}px sans-serif`;
          for (const d of getDeploys()) {
            const x = Math.round(u.valToPos(d.t, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + height); ctx.stroke();
            ctx.fillText(d.version, x + 3 * devicePixelRatio, top + 10 * devicePixelRatio);
          }
          ctx.restore();
        }],
      },
    };
  }

  function charts() {
    const section = $("#charts");
    if (!section || typeof uPlot === "undefined") return;
    const app = section.dataset.app;
    let range = "1h";
    let latest = null;
    const made = {};
    window.dockyardCharts = made;

    function width(el) { return Math.max(300, el.clientWidth || 520); }

    function make(name, series, data, yLabel) {
      const el = $(`#chart-${name}`);
      const key = series.map((s) => s.label).join("|");
      if (made[name] && made[name]._key === key) {
        made[name].setData(data);
        made[name].redraw(false, true);
        return;
      }
      if (made[name]) { made[name].destroy(); }
      el.textContent = "";
      const opts = {
        width: width(el), height: 190,
        plugins: [deployMarkers(() => (latest ? latest.deploys : []))],
        scales: {
          // Up to now, so a deploy made in the current step is on the axis.
          x: { time: true, range: (u, min, max) => (latest ? [latest.t[0], Math.max(max, latest.now)] : [min, max]) },
          y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)] },
        },
        axes: [{}, { label: yLabel, size: 56 }],
        legend: { live: true },
        series: [{}].concat(series.map((s, i) => ({
          label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 1.5,
          // Sparse series (latency, samples) show their points: a lone one has no line.
          spanGaps: !!s.spanGaps, points: { show: !!s.spanGaps, size: 4 },
        }))),
      };
      const u = new uPlot(opts, data, el);
      u._key = key;
      made[name] = u;
    }

    function draw(m) {
      latest = m;
      window.dockyardMetrics = m;
      const t = m.t;
      make("requests", [
        { label: "all", color: "#1f6feb" }, { label: "2xx", color: "#1a7f37" },
        { label: "3xx", color: "#8250df" }, { label: "4xx", color: "#bf8700" },
        { label: "5xx", color: "#cf222e" },
      ], [t, m.rps, m.status["2xx"], m.status["3xx"], m.status["4xx"], m.status["5xx"]], "req/s");
      make("latency", [
        { label: "p50", color: "#1a7f37", spanGaps: true }, { label: "p95", color: "#cf222e", spanGaps: true },
      ], [t, m.p50, m.p95], "ms");
      const dynos = Object.keys(m.containers);
      make("cpu", dynos.map((d) => ({ label: d, spanGaps: true })),
        [t].concat(dynos.map((d) => m.containers[d].cpu)), "%");
      make("memory", dynos.map((d) => ({ label: d, spanGaps: true })),
        [t].concat(dynos.map((d) => m.containers[d].memory.map((v) => (v === null ? null : +(v / 1048576).toFixed(1))))), "MiB");
      section.dataset.loaded = String(Date.now());
    }

    async function refresh() {
      try {
        draw(await getJSON(`/api/apps/${encodeURIComponent(app)}/metrics?range=${range}`));
      } catch (e) {
        $("#charts-note").textContent = "Metrics could not be loaded: " + e.message;
      }
    }

    for (const b of $$(".ranges button", section)) {
      b.addEventListener("click", () => {
        range = b.dataset.range;
        $$(".ranges button", section).forEach((o) => o.classList.toggle("on", o === b));
        refresh();
      });
    }
    window.addEventListener("resize", () => {
      for (const name of Object.keys(made)) {
        made[name].setSize({ width: width($(`#chart-${name}`)), height: 190 });
      }
    });
    refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, 5000);
  }

  // ------------------------------------------------------------ one rollback per click
  function rollbackForms() {
    for (const form of $$("form.rollback")) {
      form.addEventListener("submit", () => {
        for (const b of $$("form.rollback button")) b.disabled = true;
        form.querySelector("button").textContent = "Rolling back…";
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    rollbackForms();
    signIn();
    followBuilds();
    revealConfig();
    charts();
  });
})();
