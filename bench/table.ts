// The README's CPU benchmark table, rendered from a results JSON of `npm run bench`:
//   node dist/bench/table.js bench/results/cpu-<host>.json
// test/bench-table.test.ts checks that the README's table is this rendering of the committed JSON.
import * as fs from 'node:fs';

interface Row {
  op: string; shape: string; dtype: string; nativeMs: number; plainMs: number | null; ratio: number | null;
  passes: string; floorMs: number; floorFraction: number; expMs: number; peer: string | null; peerMs: number | null; speedup: number | null;
}
interface Result {
  machine: { cpu: string; threads: number; simd: string };
  floor: { readGBs: number; copyGBs: number; expGElems: number; threads: number };
  peers: { torch?: string; threads?: number; absent?: string };
  commit: string;
  date: string;
  rows: Row[];
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function renderTable(r: Result, file: string): string {
  const lines: string[] = [];
  const peers = r.peers.torch ? `PyTorch ${r.peers.torch} eager on ${r.peers.threads} threads` : `no PyTorch peers (${r.peers.absent})`;
  lines.push(
    `${r.machine.cpu}, ${r.machine.threads} threads, ${r.machine.simd}; ${peers}; commit ${r.commit.slice(0, 7)}, ${r.date.slice(0, 10)} ` +
      `(\`${file}\`). Floor measured in the same run: read ${r.floor.readGBs.toFixed(1)} GB/s, copy ${r.floor.copyGBs.toFixed(1)} GB/s ` +
      `(read + write), exp ${r.floor.expGElems.toFixed(2)} G elements/s.`,
  );
  lines.push('');
  lines.push('| op | shape | dtype | time | passes over memory | floor | % of floor | exp-bound | PyTorch | speed-up | plain TS |');
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const x of r.rows) {
    lines.push(
      `| ${x.op} | ${x.shape} | ${x.dtype} | ${ms(x.nativeMs)} ms | ${x.passes} | ${ms(x.floorMs)} ms | ${(x.floorFraction * 100).toFixed(0)}% | ` +
        `${ms(x.expMs)} ms | ${x.peerMs === null ? '—' : `${ms(x.peerMs)} ms`} | ${x.speedup === null ? '—' : `×${x.speedup.toFixed(2)}`} | ` +
        `${x.ratio === null ? '—' : `×${x.ratio.toFixed(1)}`} |`,
    );
  }
  return lines.join('\n');
}

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node dist/bench/table.js RESULTS.json');
    process.exit(2);
  }
  console.log(renderTable(JSON.parse(fs.readFileSync(file, 'utf8')) as Result, file));
}
