import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { House, runCatDemo } from '../lib/demos/cat';

t.test('the house', async (t) => {
  const h = new House();
  const d = h.safeDistances();
  t.equal(d.get(h.meat), 0);
  t.equal(d.size, h.cells().filter((c) => h.kind(c) !== 'T').length, 'every open cell but the tub reaches the meat');
  const corner = h.cols + 1; // row 1, column 1: walls above and to the left
  t.equal(h.move(corner, 0), corner, 'moving into a wall leaves the cat in place');
  t.equal(h.move(corner, 2), corner);
  t.equal(h.move(corner, 3), corner + 1, 'an open cell can be entered');
  const start = [...d.entries()].find(([, v]) => v === 1)![0];
  const a = [0, 1, 2, 3].find((x) => h.move(start, x) === h.meat)!;
  t.equal(h.trajectoryReturn(start, [a], 0.98), 100, 'one step onto the meat: +100');
  t.equal(h.trajectoryReturn(start, [a, a, a], 0.98), 100, 'the episode ends at the meat');
});

t.test('GRPO teaches the cat shortest bathtub-free paths from every start cell (fixed seed, 60 steps)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-cat-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const chartFile = path.join(dir, 'cat.svg');
  const r = await runCatDemo({ steps: 60, seed: 1, chartFile, progress: false });
  t.same(r.failures, [], 'every start cell: greedy path = shortest path avoiding the bathtub');
  t.ok(r.solvedAtStep !== null && r.solvedAtStep < 60, `solved at step ${r.solvedAtStep}`);
  t.ok(r.rewardCurve.at(-1)! > r.rewardCurve[0]! + 50, `mean reward ${r.rewardCurve[0]!.toFixed(1)} → ${r.rewardCurve.at(-1)!.toFixed(1)}`);
  t.ok(r.seconds < 30, `${r.seconds.toFixed(1)} s`);
  const svg = fs.readFileSync(chartFile, 'utf8');
  t.match(svg, /^<svg/);
  t.match(svg, /mean reward/);
  t.match(r.arrows, /🍖/);
});
