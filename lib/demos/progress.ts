// A progress bar for long demo runs (cli-progress, an optional dependency: without it a plain
// one-line counter); silent when stdout is not a terminal.
import { requireOptional } from '../optional';

export interface Progress {
  update(step: number, values: Record<string, string>): void;
  stop(): void;
}

export function progressBar(total: number, label: string, show = process.stdout.isTTY === true): Progress {
  if (!show) return { update() {}, stop() {} };
  let mod: typeof import('cli-progress') | undefined;
  try {
    mod = requireOptional<typeof import('cli-progress')>('cli-progress', 'the progress bar');
  } catch {
    mod = undefined;
  }
  const status = (values: Record<string, string>) => Object.entries(values).map(([k, v]) => `${k} ${v}`).join(' | ');
  if (!mod) {
    return {
      update(step, values) {
        process.stdout.write(`\r${label} ${step}/${total} steps | ${status(values)}`);
      },
      stop() {
        process.stdout.write("\n");
      },
    };
  }
  const bar = new mod.SingleBar({
    format: `${label} [{bar}] {value}/{total} steps | {status}`,
    barCompleteChar: '█',
    barIncompleteChar: '░',
    hideCursor: true,
    clearOnComplete: false,
  });
  bar.start(total, 0, { status: '' });
  return {
    update(step, values) {
      bar.update(step, { status: status(values) });
    },
    stop() {
      bar.stop();
    },
  };
}
