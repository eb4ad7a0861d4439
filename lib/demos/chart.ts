// Line charts as SVG files, rendered headless with vega-lite (no browser, no canvas).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GrpoKernelsError } from '../errors';
import { requireOptional } from '../optional';

export interface Series {
  name: string;
  points: { x: number; y: number }[];
}

/** Charts are SVG: a file name with another extension is refused (GK_INVALID_ARG) before any work. */
export function checkChartFile(file: string): void {
  const ext = path.extname(file).toLowerCase();
  if (ext !== '.svg')
    throw new GrpoKernelsError('GK_INVALID_ARG', `the chart is written as SVG, so its file name must end in .svg; got '${file}'${ext ? ` (${ext} is not supported; convert the SVG afterwards)` : ''}`);
}

/** Renders a vega-lite spec to an SVG file (headless). */
export async function writeVegaLite(file: string, liteSpec: object): Promise<string> {
  checkChartFile(file);
  // Loaded on demand, optional dependencies: only the demos and the benchmarks draw charts.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const vega = requireOptional<any>('vega', 'drawing a chart', ['vega', 'vega-lite']);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const vl = requireOptional<any>('vega-lite', 'drawing a chart', ['vega', 'vega-lite']);
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

/**
 * Draws a chart unless its optional packages are missing: then no file, and a note saying what
 * to install (the demos still run after `npm install --omit=optional`).
 */
export async function tryChart(draw: () => Promise<string>): Promise<{ chartFile: string | null; chartNote?: string }> {
  try {
    return { chartFile: await draw() };
  } catch (e) {
    if (e instanceof GrpoKernelsError && e.code === 'GK_MISSING_PACKAGE') return { chartFile: null, chartNote: e.message };
    throw e;
  }
}
