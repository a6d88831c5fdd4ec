// A feature layer of a TorchScript module, for feature-space detectors (Mahalanobis): the
// module gets a second method, `gibbon_features(x)`, whose graph is a copy of `forward`'s that
// returns the value of the named layer instead of the logits (and computes nothing after it).
// Its gradient with respect to x flows as through `forward`. tch cannot edit TorchScript
// graphs, hence this shim.
//
// A layer is named
// - `penultimate`: the input of the last linear layer (aten::linear, its first input;
//   aten::addmm, its second; aten::matmul, its first);
// - a submodule path (`fc2`, `features.7`): the output of that submodule's `forward` call, found
//   by inlining the calls of its ancestors one level at a time (so the call boundary survives);
// - a value of the inlined graph by its debug name (`input6.1`), or by that name without its
//   uniquing suffix when only one value has it (`input6`, as spelled in `module.code`).
// The module with the new method is serialized back into TorchScript bytes.
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include "shim.h"

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace {

using torch::jit::Block;
using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
using gibbon_shim::collect;
using gibbon_shim::copy_text;
using gibbon_shim::save_module;

std::vector<std::string> split_path(const std::string &path) {
  std::vector<std::string> parts;
  std::string part;
  for (char c : path) {
    if (c == '.') {
      parts.push_back(part);
      part.clear();
    } else {
      part.push_back(c);
    }
  }
  parts.push_back(part);
  return parts;
}

// The attribute path of `v` from the graph's `self` (its first input) through prim::GetAttr
// nodes, or false when `v` is not such a chain.
bool attr_path(Value *v, Value *self, std::vector<std::string> &out) {
  std::vector<std::string> reversed;
  while (v != self) {
    Node *n = v->node();
    if (n->kind() != torch::jit::prim::GetAttr) return false;
    reversed.push_back(n->s(torch::jit::attr::name));
    v = n->input(0);
  }
  out.assign(reversed.rbegin(), reversed.rend());
  return true;
}

bool is_prefix(const std::vector<std::string> &p, const std::vector<std::string> &of) {
  if (p.size() > of.size()) return false;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != of[i]) return false;
  return true;
}

// The output of the `forward` call of the submodule at `target` in `graph`, inlining the calls
// of its ancestors as needed; null when no such call exists.
Value *submodule_output(const std::shared_ptr<Graph> &graph,
                        const std::vector<std::string> &target) {
  using namespace torch::jit;
  Value *self = graph->inputs().at(0);
  for (;;) {
    std::vector<Node *> nodes;
    collect(graph->block(), nodes);
    Node *ancestor = nullptr;
    for (Node *n : nodes) {
      if (n->kind() != prim::CallMethod || n->s(attr::name) != "forward") continue;
      std::vector<std::string> path;
      if (!attr_path(n->input(0), self, path) || !is_prefix(path, target)) continue;
      if (path.size() == target.size()) return n->outputs().size() == 1 ? n->output() : nullptr;
      if (ancestor == nullptr) ancestor = n;
    }
    if (ancestor == nullptr) return nullptr;
    auto cls = ancestor->input(0)->type()->expect<c10::ClassType>();
    Function &callee = cls->getMethod(ancestor->s(attr::name));
    // The callee's own graph, not its optimized (already inlined) one: the calls of its
    // submodules must stay calls.
    GraphFunction &fn = toGraphFunction(callee);
    inlineCallTo(ancestor, &fn, fn.graph().get());
  }
}

// The input of the last linear layer of the (inlined) graph, or null.
Value *penultimate(const std::shared_ptr<Graph> &graph) {
  using namespace torch::jit;
  std::vector<Node *> nodes;
  collect(graph->block(), nodes);
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    Node *n = *it;
    if (n->kind() == aten::linear || n->kind() == aten::matmul) return n->input(0);
    if (n->kind() == aten::addmm) return n->input(1);
  }
  return nullptr;
}

// `name` without TorchScript's uniquing suffix (`input6.1` -> `input6`).
std::string base_name(const std::string &name) {
  size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot + 1 == name.size()) return name;
  for (size_t i = dot + 1; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return name;
  return name.substr(0, dot);
}

// The value whose debug name is `name`, or else the only one whose name is `name` plus a
// uniquing suffix (`input6` for `input6.1`, as the variable is spelled in `module.code`).
Value *named_value(const std::shared_ptr<Graph> &graph, const std::string &name) {
  std::vector<Node *> nodes;
  collect(graph->block(), nodes);
  Value *by_base = nullptr;
  int bases = 0;
  for (Node *n : nodes)
    for (Value *v : n->outputs()) {
      if (!v->hasDebugName()) continue;
      if (v->debugName() == name) return v;
      if (base_name(v->debugName()) == name) {
        by_base = v;
        ++bases;
      }
    }
  return bases == 1 ? by_base : nullptr;
}

// What the error lists: the submodule paths, then the tensor values of the inlined graph.
std::string available(const torch::jit::Module &module, const std::shared_ptr<Graph> &inlined) {
  std::string out = "penultimate";
  for (const auto &m : module.named_modules())
    if (!m.name.empty()) out += ", " + m.name;
  std::vector<Node *> nodes;
  collect(inlined->block(), nodes);
  for (Node *n : nodes)
    for (Value *v : n->outputs())
      if (v->hasDebugName() && v->type()->cast<c10::TensorType>() &&
          n->kind() != torch::jit::prim::Constant && n->kind() != torch::jit::prim::GetAttr)
        out += ", " + v->debugName();
  return out;
}

}  // namespace

extern "C" {

// Loads a TorchScript module from `len` bytes, adds the method `gibbon_features` returning the
// layer `layer` (NUL-terminated), and returns the serialized module in `*out` / `*out_len`.
// Returns 0; 1 when the layer does not exist (`*error` lists the available ones); -1 on any
// other failure with `*error` set. Free every returned buffer with gibbon_features_free.
int gibbon_feature_layer(const char *data, size_t len, const char *layer, char **out,
                         size_t *out_len, char **error) {
  try {
    std::istringstream stream(std::string(data, len));
    torch::jit::Module module = torch::jit::load(stream, c10::Device(c10::kCPU));
    module.eval();
    std::shared_ptr<Graph> graph = module.get_method("forward").graph()->copy();
    std::string name(layer);
    Value *feature = nullptr;
    if (name != "penultimate") feature = submodule_output(graph, split_path(name));
    // Held as an extra output while the rest is inlined (inlining replaces the value).
    if (feature != nullptr) graph->registerOutput(feature);
    torch::jit::Inline(*graph);
    if (feature != nullptr) feature = graph->outputs().at(graph->outputs().size() - 1);
    if (feature == nullptr)
      feature = name == "penultimate" ? penultimate(graph) : named_value(graph, name);
    if (feature == nullptr) {
      *error = copy_text(available(module, graph));
      return 1;
    }
    if (!feature->type()->cast<c10::TensorType>()) {
      *error = copy_text("the layer's value is a " + feature->type()->str() + ", not a tensor");
      return -1;
    }
    while (graph->outputs().size() > 0) graph->eraseOutput(0);
    graph->registerOutput(feature);
    torch::jit::EliminateDeadCode(graph);
    auto cu = module._ivalue()->compilation_unit();
    c10::QualifiedName qualified(*module.type()->name(), "gibbon_features");
    if (auto *existing = module.type()->findMethod("gibbon_features")) {
      (void)existing;
      *error = copy_text("the module already has a method named gibbon_features");
      return -1;
    }
    torch::jit::Function *fn = cu->create_function(qualified, graph);
    module.type()->addMethod(fn);
    return save_module(module, out, out_len, error);
  } catch (const std::exception &e) {
    *error = copy_text(e.what());
  } catch (...) {
    *error = copy_text("unknown C++ exception");
  }
  return -1;
}

void gibbon_features_free(char *p) { std::free(p); }

}  // extern "C"
