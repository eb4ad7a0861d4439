// The README's CPU benchmark table is the rendering (bench/table.ts) of the committed results JSON
// it names, so its figures are a run's record, with the floor and the peers of that same run.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { renderTable } from '../bench/table';

const root = path.resolve(__dirname, '..');

t.test('README CPU table = bench/table.ts rendering of its JSON', async (t) => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const m = /<!-- cpu-bench: (\S+) -->\n([\s\S]*?)\n<!-- \/cpu-bench -->/.exec(readme);
  t.ok(m, 'the README has a cpu-bench block naming its JSON');
  if (!m) return;
  const file = m[1]!;
  const json = JSON.parse(fs.readFileSync(path.join(root, file), 'utf8'));
  t.equal(m[2], renderTable(json, file), `the block is the rendering of ${file}`);
  t.ok(json.floor.readGBs > 0 && json.floor.copyGBs > 0 && json.floor.expGElems > 0, 'the run measured its floor');
  for (const row of json.rows) t.ok(row.floorMs > 0 && row.nativeMs > 0, `${row.op} ${row.shape} ${row.dtype}: floor and time`);
});
