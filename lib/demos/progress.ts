// A progress bar for long demo runs (cli-progress); silent when stdout is not a terminal.
import { SingleBar } from 'cli-progress';

export interface Progress {
  update(step: number, values: Record<string, string>): void;
  stop(): void;
}

export function progressBar(total: number, label: string, show = process.stdout.isTTY === true): Progress {
  if (!show) return { update() {}, stop() {} };
  const bar = new SingleBar({
    format: `${label} [{bar}] {value}/{total} steps | {status}`,
    barCompleteChar: '█',
    barIncompleteChar: '░',
    hideCursor: true,
    clearOnComplete: false,
  });
  bar.start(total, 0, { status: '' });
  return {
    update(step, values) {
      bar.update(step, { status: Object.entries(values).map(([k, v]) => `${k} ${v}`).join(' | ') });
    },
    stop() {
      bar.stop();
    },
  };
}
