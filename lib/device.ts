import { fail } from './errors';
import { addon, packageVersion, type NativeInfo } from './native';

export type DeviceRequest = 'auto' | 'cpu' | 'cuda';

export interface BackendInfo {
  packageVersion: string;
  addonVersion: string;
  /** The backend ops run on. */
  backend: 'cpu';
  cpu: { threads: number; simd: string };
  cuda: NativeInfo['cuda'] & {
    /** Whether the CUDA backend is used, and if not, why. */
    used: boolean;
    reason: string;
  };
}

/** What the package and its addon are, and which backend runs the ops (and why not CUDA). */
export function backendInfo(): BackendInfo {
  const i = addon().info();
  let reason: string;
  if (!i.cuda.compiled) reason = i.cuda.error;
  else if (i.cuda.deviceCount === 0)
    reason = i.cuda.driverVersion === 0 ? `no NVIDIA driver is installed (${i.cuda.error})` : i.cuda.error;
  else reason = 'CUDA kernels are not part of this version yet: the ops run on the CPU backend';
  return {
    packageVersion,
    addonVersion: i.version,
    backend: 'cpu',
    cpu: { threads: i.threads, simd: i.simd },
    cuda: { ...i.cuda, used: false, reason },
  };
}

/** Resolves a device request to the backend that will run it; 'cuda' fails with GK_DEVICE when CUDA cannot be used. */
export function resolveDevice(request: DeviceRequest): 'cpu' {
  if (request === 'cpu' || request === 'auto') return 'cpu';
  if (request === 'cuda') {
    const info = backendInfo();
    fail('GK_DEVICE', `device 'cuda' is not available: ${info.cuda.reason}`);
  }
  fail('GK_INVALID_ARG', `device must be 'auto', 'cpu' or 'cuda', got '${String(request)}'`);
}
