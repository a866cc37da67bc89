// A uPlot time-series chart: x in Unix seconds over `span` [from, to], one
// line (or bar) per series.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

export function Chart({ title, unit, series, data, span, bars = false }) {
  const box = useRef(null);
  useEffect(() => {
    const el = box.current;
    if (!el || !data[0].length) return undefined;
    const options = {
      title,
      width: el.clientWidth || 600,
      height: 220,
      scales: { x: { time: true, range: () => span }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } },
      axes: [{}, { label: unit, size: 60 }],
      series: [
        {},
        ...series.map((label, i) => ({
          label,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          spanGaps: false,
          points: { show: data[0].length < 40 },
          ...(bars ? { paths: uPlot.paths.bars({ size: [0.6, 40] }), fill: `${COLORS[i % COLORS.length]}55` } : {}),
        })),
      ],
    };
    const plot = new uPlot(options, data, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: 220 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [title, unit, JSON.stringify(series), JSON.stringify(data), JSON.stringify(span), bars]);
  return (
    <div class="chart" data-chart={title}>
      {data[0].length ? <div ref={box} /> : <p class="empty">{title}: no data in this range.</p>}
    </div>
  );
}
