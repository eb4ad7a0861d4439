// Line charts as SVG files, rendered headless with vega-lite (no browser, no canvas).
import * as fs from 'node:fs';

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

/** Renders a vega-lite spec to an SVG file (headless). */
export async function writeVegaLite(file: string, liteSpec: object): Promise<string> {
  // Loaded on demand: only the demos and the benchmarks draw charts.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const vega = require('vega');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const vl = require('vega-lite');
  const spec = vl.compile(liteSpec).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  const svg: string = await view.toSVG();
  view.finalize();
  fs.writeFileSync(file, svg);
  return file;
}

export async function writeLineChart(file: string, title: string, xTitle: string, yTitle: string, series: Series[]): Promise<string> {
  const values = series.flatMap((s) => s.points.map((p) => ({ series: s.name, x: p.x, y: p.y })));
  return writeVegaLite(file, {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title,
    width: 640,
    height: 320,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: series.every((s) => s.points.length <= 60) },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: xTitle },
      y: { field: 'y', type: 'quantitative', title: yTitle },
      color: { field: 'series', type: 'nominal', title: null },
    },
  });
}
