// Argument checks at the JavaScript boundary. Every entry point reads its
// arguments through these before it does anything: a wrong type throws a
// TypeError, a number out of range or a range outside a buffer throws a
// RangeError, each naming the function and the argument. A failed check
// returns false with the exception pending; the caller returns at once.
// These check types and memory bounds only; device ranges, alignment and
// every other rule belong to the TypeScript layer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <napi.h>

namespace dmtool {

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* function) : info_(info), function_(function) {}

  Napi::Env Env() const { return info_.Env(); }

  // A descriptor: an integer in [0, INT32_MAX].
  bool Fd(size_t i, const char* name, int* out) const;
  // A byte count or position: an integer in [0, 2^53 - 1].
  bool U64(size_t i, const char* name, uint64_t* out) const;
  // An integer in [min, max].
  bool Int(size_t i, const char* name, int min, int max, int* out) const;
  bool Bool(size_t i, const char* name, bool* out) const;
  bool String(size_t i, const char* name, std::string* out) const;
  bool Buffer(size_t i, const char* name, Napi::Buffer<uint8_t>* out) const;
  bool Function(size_t i, const char* name, Napi::Function* out) const;
  bool Array(size_t i, const char* name, Napi::Array* out) const;
  bool Float64Array(size_t i, const char* name, Napi::Float64Array* out) const;

  // The same checks on a value that is not a direct argument (an array element).
  bool FdValue(const Napi::Value& v, const std::string& name, int* out) const;
  bool U64Value(const Napi::Value& v, const std::string& name, uint64_t* out) const;
  bool U64Number(double d, const std::string& name, uint64_t* out) const;

  // [offset, offset + length) must lie inside `holder` (a buffer, a span) of holderBytes.
  bool Within(const std::string& what, uint64_t offset, uint64_t length, uint64_t holderBytes,
              const char* holder = "the buffer") const;

  bool TypeError(const std::string& name, const char* expected) const;
  bool RangeError(const std::string& name, const std::string& detail) const;

 private:
  const Napi::CallbackInfo& info_;
  const char* function_;
};

}  // namespace dmtool
