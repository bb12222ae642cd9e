// costop sim --report: draws the panels of #report-data with uPlot, then
// checks what uPlot laid out and writes the result into #layout-check
// (and body[data-layout] = "ok" | "overlap"), so that a headless browser's
// DOM says whether any tick label, legend or title overlaps another.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const FONT_PX = 12;
  const FONT = FONT_PX + "px sans-serif";
  const LABEL_FONT = "bold " + FONT;
  const TICK = 6; // tick mark length, px
  const GAP = 5; // between a tick mark and its label
  const LABEL_SIZE = 22; // the band of an axis title
  const HEIGHT = 280;
  const COUNT_STEPS = [];
  for (let p = 1; p <= 1e12; p *= 10) COUNT_STEPS.push(p, 2 * p, 5 * p);

  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = FONT;
  const measure = (s) => ctx.measureText(String(s)).width;

  const trim = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
  // 12k, 3.4M; `thousands` from where to count in k (1000 for dollars).
  function number(v, thousands) {
    const a = Math.abs(v);
    if (a >= 1e6) return trim((v / 1e6).toFixed(2)) + "M";
    if (a >= (thousands || 1e4)) return trim((v / 1e3).toFixed(1)) + "k";
    return trim(v.toFixed(a < 10 ? 3 : 1));
  }
  function label(v, format) {
    if (format === "usd") return "$" + number(v, 1000);
    if (format === "ratio") return trim(v.toFixed(3));
    return number(v);
  }

  // The tick labels each axis last drew and the size it got, per chart.
  const drawn = [];

  function axisValues(rec, axis, format) {
    return (u, splits) => {
      const labels = splits.map((v) => (v == null ? null : format ? label(v, format) : trim(v.toFixed(2))));
      rec.ticks[axis] = { splits: splits.slice(), labels: labels };
      return labels;
    };
  }

  // Wide enough for the widest tick label, its tick and gap: the labels
  // never reach into the axis title's band.
  function ySize(rec) {
    return (u, values) => {
      const widest = Math.max(0, ...(values || []).filter((v) => v != null).map(measure));
      rec.size = Math.ceil(widest) + TICK + GAP + 4;
      return rec.size;
    };
  }

  function logSplits(u, axisIdx, min, max) {
    const top = max;
    const powers = [];
    for (let p = 1; p <= top * 1.000001; p *= 10) powers.push(p);
    // Every decade while they fit, every other one past eight.
    const step = Math.ceil(powers.length / 8);
    const kept = powers.filter((_, i) => (powers.length - 1 - i) % step === 0);
    return [0].concat(kept.filter((p) => p >= (powers.length > 4 ? 10 : 1)));
  }

  function chart(panel, width) {
    const rec = { id: panel.id, ticks: {}, size: 0, u: null };
    const max = (vals) => Math.max(0, ...vals.filter((v) => v != null));
    const top = Math.max(...panel.lines.map((l) => max(l.values)));
    const y = panel.log
      ? { distr: 4, log: 10, asinh: 1, range: () => [0, Math.pow(10, Math.max(1, Math.ceil(Math.log10(Math.max(10, top)))))] }
      : { range: () => [0, top > 0 ? top * 1.06 : 1] };
    const grid = { stroke: "#e4e7eb", width: 1 };
    const ticks = { size: TICK, stroke: "#9aa3ad", width: 1 };
    const opts = {
      width: width,
      height: HEIGHT,
      cursor: { sync: { key: "report" } },
      legend: { live: true },
      scales: { x: { time: false }, y: y },
      axes: [
        {
          label: data.x_label, font: FONT, labelFont: LABEL_FONT, labelSize: LABEL_SIZE, gap: GAP,
          grid: grid, ticks: ticks, size: FONT_PX + TICK + GAP + 6, space: 60, values: axisValues(rec, 0, null),
        },
        {
          label: panel.y_label, font: FONT, labelFont: LABEL_FONT, labelSize: LABEL_SIZE, gap: GAP,
          grid: grid, ticks: ticks, size: ySize(rec), space: 36, values: axisValues(rec, 1, panel.format),
          splits: panel.log ? logSplits : undefined,
          // Whole requests: no 0.2 of one.
          incrs: panel.format === "count" && !panel.log ? COUNT_STEPS : undefined,
          // Every split gets its label (uPlot's log filter would blank some).
          filter: panel.log ? (u, splits) => splits : undefined,
        },
      ],
      series: [{ label: data.x_label, value: (u, v) => (v == null ? "" : trim(v.toFixed(2))) }].concat(
        panel.lines.map((l) => ({
          label: l.name, stroke: l.color, width: 2, dash: l.dash.length ? l.dash : undefined,
          points: { show: false }, value: (u, v) => (v == null ? "" : label(v, panel.format)),
        })),
      ),
      hooks: { draw: [() => { rec.drawn = true; if (drawn.every((r) => r.drawn)) check(); }] },
    };
    drawn.push(rec);
    const values = [data.x].concat(panel.lines.map((l) => l.values));
    rec.u = new uPlot(opts, values, document.getElementById("chart-" + panel.id));
  }

  const box = (el) => el.getBoundingClientRect();
  const meets = (a, b, pad) =>
    a.left < b.right + pad && b.left < a.right + pad && a.top < b.bottom + pad && b.top < a.bottom + pad;
  const round = (r) => ({ left: Math.round(r.left), top: Math.round(r.top), right: Math.round(r.right), bottom: Math.round(r.bottom) });

  let checked = false;
  function check() {
    if (checked) return;
    checked = true;
    const problems = [];
    const charts = drawn.map((rec) => {
      const u = rec.u;
      const root = box(u.root);
      const plot = box(u.over);
      const axes = [0, 1].map((axis) => {
        const t = rec.ticks[axis];
        const scale = axis === 0 ? "x" : "y";
        if (!t) {
          problems.push(`${rec.id}: the ${scale} axis drew no tick labels`);
          return { labels: [] };
        }
        const { min, max } = u.scales[scale];
        const slack = 1e-9 * Math.abs(max - min);
        const rects = t.splits
          .map((v, i) => ({ v: v, text: t.labels[i] }))
          .filter((s) => s.text != null && s.text !== "" && s.v >= min - slack && s.v <= max + slack)
          .map((s) => {
            const p = u.valToPos(s.v, scale);
            const w = measure(s.text);
            const r = axis === 0
              ? { left: plot.left + p - w / 2, right: plot.left + p + w / 2, top: plot.bottom + TICK + GAP, bottom: plot.bottom + TICK + GAP + FONT_PX }
              : { left: plot.left - TICK - GAP - w, right: plot.left - TICK - GAP, top: plot.top + p - FONT_PX / 2, bottom: plot.top + p + FONT_PX / 2 };
            return Object.assign(round(r), { text: s.text });
          });
        const along = axis === 0 ? "left" : "top";
        const sorted = rects.slice().sort((a, b) => a[along] - b[along]);
        for (let i = 1; i < sorted.length; i++) {
          if (meets(sorted[i - 1], sorted[i], 2)) {
            problems.push(`${rec.id}: tick labels ${sorted[i - 1].text} and ${sorted[i].text} overlap`);
          }
        }
        for (const r of rects) {
          if (r.left < root.left - 0.5 || r.right > root.right + 0.5) {
            problems.push(`${rec.id}: tick label ${r.text} is cut off at the chart's edge`);
          }
          if (axis === 1 && r.left < root.left + LABEL_SIZE) {
            problems.push(`${rec.id}: tick label ${r.text} reaches into the y axis title`);
          }
        }
        if (rects.length < 2) problems.push(`${rec.id}: the ${scale} axis shows ${rects.length} tick labels`);
        return { labels: rects.map((r) => r.text), boxes: rects };
      });
      const legend = u.root.querySelector(".u-legend");
      if (!legend) problems.push(`${rec.id}: no legend`);
      else if (meets(box(legend), plot, 0)) problems.push(`${rec.id}: the legend lies on the plot`);
      const heading = document.querySelector(`#panel-${rec.id} h2`);
      if (heading && meets(box(heading), root, 0)) problems.push(`${rec.id}: the title lies on the chart`);
      const panel = box(document.getElementById("panel-" + rec.id));
      for (const [what, r] of [["chart", root], ["legend", legend ? box(legend) : root]]) {
        if (r.left < panel.left || r.right > panel.right || r.bottom > panel.bottom) {
          problems.push(`${rec.id}: the ${what} sticks out of its panel`);
        }
      }
      return {
        id: rec.id,
        log: u.scales.y.distr === 4,
        plot: round(plot),
        legend: legend ? round(box(legend)) : null,
        legend_entries: legend ? legend.querySelectorAll("tr.u-series").length - 1 : 0,
        x_labels: axes[0].labels,
        y_labels: axes[1].labels,
        x_boxes: axes[0].boxes,
        y_boxes: axes[1].boxes,
      };
    });
    const panels = Array.from(document.querySelectorAll("section.panel")).map(box);
    for (let i = 0; i < panels.length; i++) {
      for (let j = i + 1; j < panels.length; j++) {
        if (meets(panels[i], panels[j], 0)) problems.push(`panels ${i} and ${j} overlap`);
      }
    }
    const out = document.getElementById("layout-check");
    out.textContent = JSON.stringify({ ok: problems.length === 0, problems: problems, charts: charts });
    document.body.dataset.layout = problems.length ? "overlap" : "ok";
  }

  for (const panel of data.panels) {
    chart(panel, Math.max(480, document.getElementById("chart-" + panel.id).clientWidth));
  }
})();
