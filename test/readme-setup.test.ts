// The README's setup, run literally: the commands of its "Getting started" block and of its
// "The commands" block, read from README.md at test time, run in order in a fresh copy of the
// working tree (tracked and untracked-but-not-ignored files, as a clone with the working tree's
// changes would hold: no node_modules, no build/, no dist/). `npm test` is run as its first
// steps (package.json's "test" script up to the final `tap`, which is this suite). The addon is
// built without CUDA (GK_CUDA=0) to save time; dependencies come from the npm cache when they
// can (prefer-offline).
import t from 'tap';
import type { Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

/** The shell commands of the first ```sh block under the `## <heading>` section (comments dropped). */
function commandsUnder(heading: string): string[] {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${heading}`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  if (end < 0) end = lines.length;
  const open = lines.findIndex((l, i) => i > start && i < end && /^```(sh|bash|console|shell)\s*$/.test(l.trim()));
  if (open < 0) throw new Error(`the "## ${heading}" section of README.md has no \`\`\`sh block`);
  const close = lines.findIndex((l, i) => i > open && l.trim() === '```');
  if (close < 0 || close > end) throw new Error(`the \`\`\`sh block of "## ${heading}" is not closed`);
  return lines
    .slice(open + 1, close)
    .join('\n')
    .replace(/\\\n/g, ' ') // line continuations
    .split('\n')
    .map((l) => l.replace(/^\s*\$\s+/, '').replace(/(^|\s)#(\s.*)?$/, '').trim())
    .filter((l) => l.length > 0);
}

/** The working tree's files that a clone with its changes would hold. */
function copyWorkingTree(dst: string): number {
  const ls = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard', '--deduplicate'], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (ls.status !== 0) throw new Error(`git ls-files failed: ${ls.stderr}`);
  let n = 0;
  for (const rel of ls.stdout.split('\0')) {
    if (!rel) continue;
    const src = path.join(root, rel);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(src);
    } catch {
      continue; // tracked but deleted in the working tree
    }
    if (st.isDirectory()) continue; // a submodule: not part of this package
    const to = path.join(dst, rel);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(src), to);
    else {
      fs.copyFileSync(src, to);
      fs.chmodSync(to, st.mode & 0o777);
    }
    n++;
  }
  // A clone has a .git (the install script then says `npm run build` rebuilds).
  const init = spawnSync('git', ['init', '-q'], { cwd: dst, encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`git init failed: ${init.stderr}`);
  return n;
}

/** The environment of a newcomer's shell: nothing of this test run's npm or tap leaks in. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(npm_(lifecycle|package)_|npm_command$|npm_execpath$|npm_node_execpath$|INIT_CWD$|TAP|_TAPJS|NODE_OPTIONS$|NODE_V8_COVERAGE$)/i.test(k)) continue;
    env[k] = v;
  }
  // npm run prepends this checkout's node_modules/.bin (and tap its own dirs): drop them, so that
  // the copy can only use what its own install put there.
  env.PATH = (process.env.PATH ?? '')
    .split(path.delimiter)
    .filter((p) => p && !p.includes(`${path.sep}node_modules${path.sep}.bin`) && !p.startsWith(root))
    .join(path.delimiter);
  return {
    ...env,
    GK_CUDA: '0',
    npm_config_prefer_offline: 'true',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    npm_config_progress: 'false',
  };
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  seconds: number;
}

function sh(command: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn('bash', ['-c', command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    p.stdout.setEncoding('utf8');
    p.stderr.setEncoding('utf8');
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      out += `\n[readme-setup test] timed out after ${timeoutMs / 1000} s`;
      try {
        process.kill(-p.pid!, 'SIGKILL'); // the command and everything it started
      } catch {
        // already gone
      }
    }, timeoutMs);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, seconds: (Date.now() - t0) / 1000 });
    });
  });
}

/** package.json's "test" script as separate steps, without the final `tap` (this suite itself). */
function testScriptFirstSteps(dir: string): string[] {
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
  const steps = (pkg.scripts?.test ?? '').split('&&').map((s) => s.trim()).filter(Boolean);
  if (steps.length < 2 || !/^tap(\s|$)/.test(steps[steps.length - 1]!))
    throw new Error(`package.json's "test" script does not end with \`tap\`: ${pkg.scripts?.test}`);
  return steps.slice(0, -1);
}

// What each command prints when it works (beyond exiting 0), keyed by what it is.
const checks: { name: string; is: RegExp; expect: (t: Test, out: string, dir: string) => void }[] = [
  {
    name: 'install',
    is: /^npm (install|i|ci)$/,
    expect: (t, out, dir) => {
      t.ok(fs.existsSync(path.join(dir, 'build', 'Release', 'grpo_kernels.node')), 'the install built the addon');
      t.ok(fs.existsSync(path.join(dir, 'dist', 'lib', 'cli.js')), 'the install compiled the TypeScript (dist/lib/cli.js)');
      t.match(out, /dist\/lib\/index\.mjs: \d+ exports/, 'the install ran build:ts');
    },
  },
  {
    name: 'demo',
    is: /^npm run demo$/,
    expect: (t, out, dir) => {
      t.match(out, /The learned policy/, 'demo draws the learned policy');
      t.match(out, /🍖/);
      t.match(out, /GRPO steps in [\d.]+ s; final mean reward/, 'demo reports the final mean reward');
      t.match(out, /every start cell now reaches the meat/, 'the policy learned to reach the meat');
      const chart = /reward curve: (\S+)/.exec(out)?.[1];
      t.ok(chart, 'demo names its chart');
      if (chart) {
        const file = path.resolve(dir, chart);
        t.ok(fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('<svg'), `the chart ${chart} is an SVG file`);
      }
    },
  },
  {
    name: 'selftest',
    is: /^npm run selftest( -- --quick)?$/,
    expect: (t, out) => {
      t.match(out, /(\d+)\/\1 cases passed/, 'selftest passes every case');
      t.notMatch(out, /\bFAIL\b/);
    },
  },
  {
    name: 'info',
    is: /^npm run info$/,
    expect: (t, out) => {
      t.match(out, /^backend: +cpu/m, 'info names the backend (CPU: built with GK_CUDA=0)');
      t.match(out, /^cuda used: /m);
    },
  },
  {
    name: 'test',
    is: /^npm (run )?test$/,
    expect: () => {},
  },
];

t.test('the README setup, run literally in a fresh copy of the working tree', async (t) => {
  // Everything below must finish within tap's per-file timeout (.taprc): each command gets what
  // is left of this budget.
  const budgetMs = 840_000;
  const deadline = Date.now() + budgetMs;

  const setup = commandsUnder('Getting started');
  const more = commandsUnder('The commands');
  t.comment(`README "Getting started": ${JSON.stringify(setup)}; "The commands": ${JSON.stringify(more)}`);

  // The setup block is the three commands a newcomer needs, in order: install, the main job, tests.
  const kind = (c: string) => checks.find((k) => k.is.test(c))?.name ?? 'other';
  t.same(setup.map(kind), ['install', 'demo', 'test'], 'Getting started: install, then the demo, then the test command');
  for (const need of ['selftest', 'info'])
    t.ok(more.some((c) => kind(c) === need), `The commands lists \`npm run ${need}\``);
  t.notOk([...setup, ...more].some((c) => /^npx grpo-kernels/.test(c)), 'in a clone the README runs npm scripts, never npx (npx would link the clone and run its install script)');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-readme-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = copyWorkingTree(dir);
  t.ok(files > 10, `copied ${files} files of the working tree to ${dir}`);
  for (const built of ['node_modules', 'build', 'dist', 'prebuilds'])
    t.notOk(fs.existsSync(path.join(dir, built)), `nothing built beforehand: no ${built}/`);

  const env = cleanEnv();
  const steps: { readme: string; run: string }[] = [];
  for (const c of [...setup, ...more]) {
    if (kind(c) === 'test') for (const s of testScriptFirstSteps(dir)) steps.push({ readme: c, run: s });
    else steps.push({ readme: c, run: c });
  }

  for (const { readme: c, run } of steps) {
    const left = deadline - Date.now();
    if (left < 5_000) {
      t.fail(`no time left for \`${run}\``);
      break;
    }
    const r = await sh(run, dir, env, left);
    const label = run === c ? `\`${c}\`` : `\`${run}\` (of \`${c}\`)`;
    const ok = r.code === 0;
    t.ok(ok, `${label} succeeds (${r.seconds.toFixed(1)} s)`, ok ? {} : { code: r.code, signal: r.signal, output: r.out.slice(-6000) });
    if (!ok) break; // later commands depend on this one
    const check = checks.find((k) => k.is.test(c));
    if (check && run === c) check.expect(t, r.out, dir);
  }

  // Running `npm install` again in the clone keeps the working build: nothing is rebuilt behind
  // the user's back (`npm run build` does that).
  const addon = path.join(dir, 'build', 'Release', 'grpo_kernels.node');
  if (!fs.existsSync(addon)) return;
  const mtime = fs.statSync(addon).mtimeMs;
  const again = await sh('npm install', dir, env, Math.max(5_000, deadline - Date.now()));
  t.equal(again.code, 0, `a second \`npm install\` succeeds (${again.seconds.toFixed(1)} s)`, again.code === 0 ? {} : { output: again.out.slice(-4000) });
  t.match(again.out, /using the existing build of the native addon \(build\/Release\/grpo_kernels\.node\); not rebuilding \(`npm run build` rebuilds it\)/);
  t.notMatch(again.out, /cmake-js (configure|build)/, 'no build ran');
  t.equal(fs.statSync(addon).mtimeMs, mtime, 'the addon file is untouched');
});
