// The BPDA rewrite of a TorchScript module (Athalye, Carlini & Wagner 2018): the same forward
// values, with the gradient of every piecewise-constant op replaced by the identity's and every
// stop-gradient removed, so gradient attacks see through input quantization and gradient
// killers. tch cannot edit TorchScript graphs, hence this shim.
//
// On the inlined forward graph:
// - aten::round / floor / ceil / trunc / fix / sign (out-of-place, first input a tensor) with
//   output y and input x becomes  detach(y) + (x - detach(x)):  the value is y exactly
//   (x - detach(x) is exactly zero), the gradient with respect to x is the identity;
// - aten::detach becomes its input: the value is the same, the gradient flows.
// In-place variants (round_, ...) are not rewritten; they are reported so the caller can say so.
// The rewritten module is serialized back into TorchScript bytes, which tch loads as usual.
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include "shim.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

using gibbon_shim::collect;
using gibbon_shim::copy_text;
using gibbon_shim::save_module;

bool is_piecewise_constant(torch::jit::Symbol kind) {
  using namespace torch::jit;
  return kind == aten::round || kind == aten::floor || kind == aten::ceil ||
         kind == aten::trunc || kind == aten::sign ||
         kind == c10::Symbol::fromQualString("aten::fix");
}

bool is_inplace_piecewise_constant(const std::string &name) {
  return name == "aten::round_" || name == "aten::floor_" || name == "aten::ceil_" ||
         name == "aten::trunc_" || name == "aten::fix_" || name == "aten::sign_";
}

// Rewrites `graph`; appends one line per change ("straight-through aten::round") or refusal
// ("not rewritten aten::round_ (in-place)") to `report`.
void rewrite(const std::shared_ptr<torch::jit::Graph> &graph, std::string &report) {
  using namespace torch::jit;
  std::vector<Node *> nodes;
  collect(graph->block(), nodes);
  for (Node *n : nodes) {
    std::string name = n->kind().toQualString();
    if (n->kind() == aten::detach && n->inputs().size() == 1) {
      n->output()->replaceAllUsesWith(n->input(0));
      n->destroy();
      report += "identity aten::detach\n";
      continue;
    }
    if (is_inplace_piecewise_constant(name)) {
      report += "not rewritten " + name + " (in-place)\n";
      continue;
    }
    if (!is_piecewise_constant(n->kind()) || n->inputs().empty() || n->outputs().size() != 1)
      continue;
    Value *x = n->input(0);
    Value *y = n->output();
    if (!x->type()->cast<TensorType>() || !y->type()->cast<TensorType>()) continue;
    WithInsertPoint guard(n->next());
    Value *y_detached = graph->insert(aten::detach, {y});
    Value *x_detached = graph->insert(aten::detach, {x});
    Value *zero = graph->insert(aten::sub, {x, x_detached});
    Value *out = graph->insert(aten::add, {y_detached, zero});
    y->replaceAllUsesAfterNodeWith(y_detached->node(), out);
    report += "straight-through " + name + "\n";
  }
}

}  // namespace

extern "C" {

// Loads a TorchScript module from `len` bytes, rewrites its forward graph, and returns the
// serialized result in `*out` / `*out_len` (free with gibbon_bpda_free) and the changes in
// `*report`. Returns 0, or -1 with `*error` set (free every string with gibbon_bpda_free).
int gibbon_bpda_rewrite(const char *data, size_t len, char **out, size_t *out_len,
                        char **report, char **error) {
  try {
    std::istringstream stream(std::string(data, len));
    torch::jit::Module module = torch::jit::load(stream, c10::Device(c10::kCPU));
    module.eval();
    std::shared_ptr<torch::jit::Graph> graph = module.get_method("forward").graph();
    torch::jit::Inline(*graph);
    std::string changes;
    rewrite(graph, changes);
    if (save_module(module, out, out_len, error) != 0) return -1;
    *report = copy_text(changes);
    return 0;
  } catch (const std::exception &e) {
    *error = copy_text(e.what());
  } catch (...) {
    *error = copy_text("unknown C++ exception");
  }
  return -1;
}

void gibbon_bpda_free(char *p) { std::free(p); }

}  // extern "C"
