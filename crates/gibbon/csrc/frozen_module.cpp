// An inference-optimized copy of a TorchScript module, for gibbon's query-only forward passes.
//
// torch::jit::freeze inlines the weights as constants and folds what it can; then
// ConvertFrozenOpsToMKLDNN keeps convolutions and the activations between them in oneDNN's
// blocked layout with pre-packed weights, instead of converting layouts and weights on every
// call. The result answers the same as the original module up to float rounding, but cannot
// compute gradients. tch does not expose these passes, hence this shim.
//
// Not torch::jit::optimize_for_inference: it also pre-transposes linear layers
// (FrozenLinearTranspose), after which a row's result depends on its position in the batch,
// which would make attack results depend on how samples are batched. Tensors cross the boundary as `torch::Tensor*`, the representation tch uses
// (tch::Tensor::as_ptr / from_ptr).
#include <torch/csrc/jit/passes/frozen_ops_to_mkldnn.h>
#include <torch/script.h>

#include "shim.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

namespace {

struct FrozenModule {
  torch::jit::Module module;
};

using gibbon_shim::copy_text;

}  // namespace

extern "C" {

// Loads a TorchScript module from `len` bytes onto the CPU, freezes and optimizes it.
// Returns a handle, or null with `*error` set (free it with gibbon_frozen_error_free).
void *gibbon_frozen_load(const char *data, size_t len, char **error) {
  try {
    std::istringstream stream(std::string(data, len));
    torch::jit::Module module = torch::jit::load(stream, c10::Device(c10::kCPU));
    module.eval();
    torch::jit::Module frozen = torch::jit::freeze(module);
    std::shared_ptr<torch::jit::Graph> graph = frozen.get_method("forward").graph();
    torch::jit::ConvertFrozenOpsToMKLDNN(graph);
    return new FrozenModule{frozen};
  } catch (const std::exception &e) {
    *error = copy_text(e.what());
  } catch (...) {
    *error = copy_text("unknown C++ exception");
  }
  return nullptr;
}

// Runs the module on `input` (a torch::Tensor*) without autograd. Returns a new
// torch::Tensor* (owned by the caller), or null with `*error` set.
void *gibbon_frozen_forward(void *handle, const void *input, char **error) {
  try {
    torch::NoGradGuard no_grad;
    auto *frozen = static_cast<FrozenModule *>(handle);
    const auto *x = static_cast<const torch::Tensor *>(input);
    c10::IValue out = frozen->module.forward({*x});
    if (!out.isTensor()) {
      *error = copy_text("the model did not return a single tensor");
      return nullptr;
    }
    return new torch::Tensor(out.toTensor().contiguous());
  } catch (const std::exception &e) {
    *error = copy_text(e.what());
  } catch (...) {
    *error = copy_text("unknown C++ exception");
  }
  return nullptr;
}

void gibbon_frozen_free(void *handle) { delete static_cast<FrozenModule *>(handle); }

void gibbon_frozen_error_free(char *error) { std::free(error); }

}  // extern "C"
