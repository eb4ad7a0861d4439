// Device probe: the CUDA runtime is linked statically, so this works (and reports why not)
// on machines with no NVIDIA driver.
#include <cuda_runtime.h>

#include <stdio.h>

#include "../backend.h"

namespace gk {
namespace cuda {

bool compiled() { return true; }

void probe(DeviceInfo* info) {
#if defined(GK_EMU)
  info->emulated = true;
#endif
  cudaRuntimeGetVersion(&info->runtime_version);
  cudaDriverGetVersion(&info->driver_version);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    snprintf(info->error, sizeof(info->error), "%s (%s)", cudaGetErrorName(err), cudaGetErrorString(err));
    cudaGetLastError();
    info->count = 0;
    return;
  }
  if (count == 0) {
    snprintf(info->error, sizeof(info->error), "no CUDA device found");
    return;
  }
  info->count = count > 8 ? 8 : count;
  for (int i = 0; i < info->count; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    snprintf(info->names[i], sizeof(info->names[i]), "%s", p.name);
    info->cc_major[i] = p.major;
    info->cc_minor[i] = p.minor;
    info->memory[i] = (int64_t)p.totalGlobalMem;
  }
}

}  // namespace cuda
}  // namespace gk
