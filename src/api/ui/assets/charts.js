// Line charts as inline SVG, drawn by the page itself (no library).
// A chart shows one value per version over a fixed time span; a missing
// value (null) breaks the line instead of drawing a misleading zero.
"use strict";

window.SwitchyardCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 320, H = 120;
  const PAD = { left: 40, right: 6, top: 6, bottom: 16 };

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(x) {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 5, 10]) if (x <= m * p) return m * p;
    return 10 * p;
  }

  // opts: {label, t0, t1 (ms), series: [{name, color, dash, points: [[t, v|null]]}],
  //        format(v) -> string, max (fixed y max, optional)}
  function line(opts) {
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.label, preserveAspectRatio: "none" });
    svg.appendChild(el("title", {}, opts.label));
    let top = 0;
    for (const s of opts.series) for (const [, v] of s.points) if (v !== null && v > top) top = v;
    const ymax = opts.max !== undefined ? opts.max : niceMax(top);
    const span = Math.max(1, opts.t1 - opts.t0);
    const x = (t) => PAD.left + ((t - opts.t0) / span) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (Math.min(v, ymax) / ymax) * (H - PAD.top - PAD.bottom);
    for (const frac of [0, 0.5, 1]) {
      const v = ymax * frac;
      svg.appendChild(el("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      svg.appendChild(el("text", { class: "tick", x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end" }, opts.format(v)));
    }
    const minutes = Math.round(span / 60000);
    for (const back of [minutes, Math.round(minutes * 2 / 3), Math.round(minutes / 3), 0]) {
      const t = opts.t1 - back * 60000;
      const anchor = back === minutes ? "start" : back === 0 ? "end" : "middle";
      svg.appendChild(el("text", { class: "tick", x: x(t), y: H - 3, "text-anchor": anchor }, back === 0 ? "now" : `-${back}m`));
    }
    let drawn = 0;
    for (const s of opts.series) {
      let d = "";
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null || t < opts.t0) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)} ${y(v).toFixed(1)}`;
        pen = true;
        drawn++;
      }
      if (d) {
        const path = el("path", { class: "line", d, stroke: s.color });
        if (s.dash) path.setAttribute("stroke-dasharray", "4 2");
        svg.appendChild(path);
      }
    }
    if (!drawn) {
      svg.appendChild(el("text", { class: "empty", x: (W + PAD.left) / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    }
    return svg;
  }

  return { line };
})();
