// Optional dependencies (package.json's optionalDependencies), loaded when first needed: the
// kernels need none of them. Charts need vega and vega-lite, the progress bar cli-progress, a
// source build cmake-js and node-addon-api. `npm install --omit=optional` leaves them out.
import { GrpoKernelsError } from './errors';

/**
 * Requires an optional package; GK_MISSING_PACKAGE naming it (and what to run) when it is not
 * installed. `what` says what needs it ("drawing a chart").
 */
export function requireOptional<T = unknown>(name: string, what: string, also: readonly string[] = []): T {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(name) as T;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    if (err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(`'${name}'`)) {
      const all = [name, ...also.filter((n) => n !== name)];
      throw new GrpoKernelsError('GK_MISSING_PACKAGE',
        `${what} needs the optional package '${name}', which is not installed (an install with --omit=optional leaves it out): run \`npm install ${all.join(' ')}\``);
    }
    throw e;
  }
}
