// Declaration shim; see ../README.md. ProcessGroupGloo.hpp's inline setTimeout names Context::setTimeout;
// the member is declared only (never called from our code, so never referenced from our objects).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
