// Autocast for gibbon's reduced-precision search (`--precision`): turns libtorch's autocast on
// for one device with a chosen low-precision dtype, and restores the previous state. tch only
// exposes the CUDA flag (at::autocast::set_enabled), not the CPU one nor the dtype, hence
// this shim. Under autocast, convolutions and matrix products run in the low-precision dtype
// (on CPUs with AVX512-BF16/AMX, oneDNN's bf16 kernels); reductions and softmax stay float32.
#include <ATen/autocast_mode.h>

namespace {

at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

}  // namespace

extern "C" {

// Enables autocast on `device` (0 CPU, 1 CUDA) with `dtype` (0 bfloat16, 1 float16).
// Returns the previous state packed as `enabled | dtype_code << 1` (dtype code 0 bfloat16,
// 1 float16, 2 another type), for gibbon_autocast_restore; -1 on error.
int gibbon_autocast_enable(int device, int dtype) {
  try {
    at::DeviceType dev = device_of(device);
    bool was = at::autocast::is_autocast_enabled(dev);
    at::ScalarType old = at::autocast::get_autocast_dtype(dev);
    int code = old == at::kBFloat16 ? 0 : (old == at::kHalf ? 1 : 2);
    at::autocast::set_autocast_dtype(dev, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
    return (was ? 1 : 0) | (code << 1);
  } catch (...) {
    return -1;
  }
}

// Restores the state returned by gibbon_autocast_enable; clears the cast cache when the
// outermost autocast region ends.
void gibbon_autocast_restore(int device, int state) {
  try {
    at::DeviceType dev = device_of(device);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, (state & 1) != 0);
    int code = state >> 1;
    if (code == 0) at::autocast::set_autocast_dtype(dev, at::kBFloat16);
    if (code == 1) at::autocast::set_autocast_dtype(dev, at::kHalf);
  } catch (...) {
  }
}

}  // extern "C"
