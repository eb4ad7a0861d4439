// `node dist/bench/chart.js bench/results/cuda-<gpu>.json`: draws the SVG chart of a CUDA bench
// result next to it (the GPU host may lack the charting libraries).
import * as fs from 'node:fs';
import { writeChart, type CudaResult } from './cuda';

async function main() {
  const file = process.argv[2];
  if (!file) throw new Error('usage: node dist/bench/chart.js <cuda result .json>');
  const r = JSON.parse(fs.readFileSync(file, 'utf8')) as CudaResult;
  const svg = file.replace(/\.json$/, '.svg');
  await writeChart(svg, r);
  console.log(svg);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
