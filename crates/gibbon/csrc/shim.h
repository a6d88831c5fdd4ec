// What gibbon's C++ shims share: C strings and serialized modules handed to Rust as malloc'd
// buffers (Rust frees them through each shim's `*_free`, i.e. std::free), and a walk over
// every node of a TorchScript block.
#pragma once

#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace gibbon_shim {

// A malloc'd, NUL-terminated copy of `text` (nullptr when out of memory).
inline char *copy_text(const std::string &text) {
  char *out = static_cast<char *>(std::malloc(text.size() + 1));
  if (out != nullptr) std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

// Serializes `module` into a malloc'd buffer `*out` of `*out_len` bytes. Returns 0, or -1 with
// `*error` set.
inline int save_module(torch::jit::Module &module, char **out, size_t *out_len, char **error) {
  std::ostringstream saved;
  module.save(saved);
  std::string bytes = saved.str();
  *out = static_cast<char *>(std::malloc(bytes.size()));
  if (*out == nullptr) {
    *error = copy_text("out of memory");
    return -1;
  }
  std::memcpy(*out, bytes.data(), bytes.size());
  *out_len = bytes.size();
  return 0;
}

// Appends every node of `block`, nested blocks included, to `out` in program order.
inline void collect(torch::jit::Block *block, std::vector<torch::jit::Node *> &out) {
  for (torch::jit::Node *n : block->nodes()) {
    out.push_back(n);
    for (torch::jit::Block *b : n->blocks()) collect(b, out);
  }
}

}  // namespace gibbon_shim
