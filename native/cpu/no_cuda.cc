// Stand-in for native/cuda when the addon is built without CUDA (no nvcc, GK_CUDA=OFF, or
// the node-gyp fallback).
#include <stdio.h>

#include "../backend.h"

#ifndef GK_WITH_CUDA
namespace gk {
namespace cuda {
bool compiled() { return false; }
void probe(DeviceInfo* info) {
  snprintf(info->error, sizeof(info->error),
           "this build of the addon has no CUDA backend (nvcc was not found or GK_CUDA=OFF at build time)");
}
}  // namespace cuda
}  // namespace gk
#endif
