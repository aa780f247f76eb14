// Module entry: synchronous open/close/aligned allocation. The module keeps no
// global state, so it loads safely in several environments (worker threads).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

namespace dmtool {
namespace {

Napi::Value ErrnoResult(Napi::Env env, int err) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err));
  return o;
}

// (path, write, direct, exclusive, lockMode) -> {fd, sizeBytes, ...} | {errno}
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  DeviceInfo d;
  int err = OpenDevice(path.c_str(), info[1].As<Napi::Boolean>().Value(), info[2].As<Napi::Boolean>().Value(),
                       info[3].As<Napi::Boolean>().Value(),
                       static_cast<LockMode>(info[4].As<Napi::Number>().Int32Value()), &d);
  if (err != 0) return ErrnoResult(env, err);
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, 0));
  o.Set("fd", Napi::Number::New(env, d.fd));
  o.Set("sizeBytes", Napi::Number::New(env, static_cast<double>(d.sizeBytes)));
  o.Set("logicalBlockSize", Napi::Number::New(env, d.logicalBlockSize));
  o.Set("physicalBlockSize", Napi::Number::New(env, d.physicalBlockSize));
  o.Set("isBlockDevice", Napi::Boolean::New(env, d.isBlockDevice));
  o.Set("dev", Napi::String::New(env, std::to_string(d.dev)));
  o.Set("ino", Napi::String::New(env, std::to_string(d.ino)));
  o.Set("rdev", Napi::String::New(env, std::to_string(d.rdev)));
  return o;
}

// (path, lockMode) -> {errno, fd}: a read-only descriptor that only holds a lock.
Napi::Value Lock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = -1;
  int err = LockPath(path.c_str(), static_cast<LockMode>(info[1].As<Napi::Number>().Int32Value()), &fd);
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err));
  o.Set("fd", Napi::Number::New(env, fd));
  return o;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  int err = close(fd) == 0 ? 0 : errno;
  return Napi::Number::New(info.Env(), err);
}

// Buffers for O_DIRECT: aligned to 4096, zero-filled, freed when collected.
Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t length = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
  void* p = nullptr;
  if (posix_memalign(&p, 4096, length == 0 ? 4096 : length) != 0) {
    Napi::Error::New(env, "out of memory allocating an aligned buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  memset(p, 0, length);
  return Napi::Buffer<uint8_t>::New(env, static_cast<uint8_t*>(p), length,
                                    [](Napi::Env, uint8_t* data) { free(data); });
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("lock", Napi::Function::New(env, Lock, "lock"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
  InitIoWorkers(env, exports);
  return exports;
}

}  // namespace dmtool

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dmtool::Init(env, exports); }

NODE_API_MODULE(dmtool_native, InitModule)
