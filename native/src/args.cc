#include "args.h"

#include <climits>
#include <cmath>
#include <cstdio>

namespace dmtool {
namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // 2^53 - 1, JavaScript's Number.MAX_SAFE_INTEGER

const char* TypeName(const Napi::Value& v) {
  switch (v.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return "boolean";
    case napi_number: return "number";
    case napi_string: return "string";
    case napi_symbol: return "symbol";
    case napi_function: return "function";
    case napi_bigint: return "bigint";
    default: return v.IsArray() ? "array" : "object";
  }
}

std::string FormatNumber(double d) {
  char text[32];
  snprintf(text, sizeof text, "%.17g", d);
  return text;
}

bool IsWholeIn(double d, double min, double max) { return std::isfinite(d) && std::trunc(d) == d && d >= min && d <= max; }

}  // namespace

bool Args::TypeError(const std::string& name, const char* expected) const {
  std::string msg = std::string(function_) + "(): " + name + " must be " + expected;
  Napi::TypeError::New(Env(), msg).ThrowAsJavaScriptException();
  return false;
}

bool Args::RangeError(const std::string& name, const std::string& detail) const {
  std::string msg = std::string(function_) + "(): " + name + " " + detail;
  Napi::RangeError::New(Env(), msg).ThrowAsJavaScriptException();
  return false;
}

bool Args::FdValue(const Napi::Value& v, const std::string& name, int* out) const {
  if (!v.IsNumber()) return TypeError(name, (std::string("a file descriptor number (got ") + TypeName(v) + ")").c_str());
  double d = v.As<Napi::Number>().DoubleValue();
  if (!IsWholeIn(d, 0, INT_MAX)) return RangeError(name, "must be a file descriptor, an integer from 0 (got " + FormatNumber(d) + ")");
  *out = static_cast<int>(d);
  return true;
}

bool Args::U64Number(double d, const std::string& name, uint64_t* out) const {
  if (!IsWholeIn(d, 0, kMaxSafeInteger)) return RangeError(name, "must be an integer from 0 to 2^53-1 (got " + FormatNumber(d) + ")");
  *out = static_cast<uint64_t>(d);
  return true;
}

bool Args::U64Value(const Napi::Value& v, const std::string& name, uint64_t* out) const {
  if (!v.IsNumber()) return TypeError(name, (std::string("a number (got ") + TypeName(v) + ")").c_str());
  return U64Number(v.As<Napi::Number>().DoubleValue(), name, out);
}

bool Args::Fd(size_t i, const char* name, int* out) const { return FdValue(info_[i], name, out); }

bool Args::U64(size_t i, const char* name, uint64_t* out) const { return U64Value(info_[i], name, out); }

bool Args::Int(size_t i, const char* name, int min, int max, int* out) const {
  Napi::Value v = info_[i];
  if (!v.IsNumber()) return TypeError(name, (std::string("a number (got ") + TypeName(v) + ")").c_str());
  double d = v.As<Napi::Number>().DoubleValue();
  if (!IsWholeIn(d, min, max)) {
    return RangeError(name, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max) + " (got " + FormatNumber(d) + ")");
  }
  *out = static_cast<int>(d);
  return true;
}

bool Args::Bool(size_t i, const char* name, bool* out) const {
  Napi::Value v = info_[i];
  if (!v.IsBoolean()) return TypeError(name, (std::string("a boolean (got ") + TypeName(v) + ")").c_str());
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

bool Args::String(size_t i, const char* name, std::string* out) const {
  Napi::Value v = info_[i];
  if (!v.IsString()) return TypeError(name, (std::string("a string (got ") + TypeName(v) + ")").c_str());
  *out = v.As<Napi::String>().Utf8Value();
  return true;
}

bool Args::Buffer(size_t i, const char* name, Napi::Buffer<uint8_t>* out) const {
  Napi::Value v = info_[i];
  if (!v.IsBuffer()) return TypeError(name, (std::string("a Buffer (got ") + TypeName(v) + ")").c_str());
  *out = v.As<Napi::Buffer<uint8_t>>();
  return true;
}

bool Args::Function(size_t i, const char* name, Napi::Function* out) const {
  Napi::Value v = info_[i];
  if (!v.IsFunction()) return TypeError(name, (std::string("a function (got ") + TypeName(v) + ")").c_str());
  *out = v.As<Napi::Function>();
  return true;
}

bool Args::Array(size_t i, const char* name, Napi::Array* out) const {
  Napi::Value v = info_[i];
  if (!v.IsArray()) return TypeError(name, (std::string("an array (got ") + TypeName(v) + ")").c_str());
  *out = v.As<Napi::Array>();
  return true;
}

bool Args::Float64Array(size_t i, const char* name, Napi::Float64Array* out) const {
  Napi::Value v = info_[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    return TypeError(name, (std::string("a Float64Array (got ") + TypeName(v) + ")").c_str());
  }
  *out = v.As<Napi::Float64Array>();
  return true;
}

bool Args::Within(const std::string& what, uint64_t offset, uint64_t length, uint64_t holderBytes,
                  const char* holder) const {
  // offset and length are below 2^53 each, so their sum cannot overflow.
  if (offset + length <= holderBytes) return true;
  return RangeError(what, "covers bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) + ") but " +
                              holder + " holds " + std::to_string(holderBytes));
}

}  // namespace dmtool
