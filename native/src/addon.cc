// Module entry: synchronous open/close/aligned allocation. The module keeps no
// global state, so it loads safely in several environments (worker threads).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "io.h"

namespace dmtool {
namespace {

constexpr int kMaxLockMode = static_cast<int>(LockMode::kExclusive);

Napi::Value ErrnoResult(Napi::Env env, int err) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err));
  return o;
}

// (path, write, direct, exclusive, lockMode, create, createBytes) -> {fd, sizeBytes, ...} | {errno}
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "open");
  std::string path;
  bool write, direct, exclusive;
  int lockMode;
  CreateRequest create;
  if (!args.String(0, "path", &path) || !args.Bool(1, "write", &write) || !args.Bool(2, "direct", &direct) ||
      !args.Bool(3, "exclusive", &exclusive) || !args.Int(4, "lockMode", 0, kMaxLockMode, &lockMode) ||
      !args.Bool(5, "create", &create.create) || !args.U64(6, "createBytes", &create.sizeBytes)) {
    return env.Undefined();
  }
  DeviceInfo d;
  int err = OpenDevice(path.c_str(), write, direct, exclusive, static_cast<LockMode>(lockMode), create, &d);
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
  Args args(info, "lock");
  std::string path;
  int lockMode;
  if (!args.String(0, "path", &path) || !args.Int(1, "lockMode", 0, kMaxLockMode, &lockMode)) return env.Undefined();
  int fd = -1;
  int err = LockPath(path.c_str(), static_cast<LockMode>(lockMode), &fd);
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err));
  o.Set("fd", Napi::Number::New(env, fd));
  return o;
}

// (fd) -> errno
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd;
  if (!Args(info, "close").Fd(0, "fd", &fd)) return info.Env().Undefined();
  int err = close(fd) == 0 ? 0 : errno;
  return Napi::Number::New(info.Env(), err);
}

// (fd, byteOffset, hole) -> {errno, byteOffset}: lseek SEEK_DATA / SEEK_HOLE, one call.
Napi::Value SeekExtentFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "seekExtent");
  int fd;
  uint64_t position;
  bool hole;
  if (!args.Fd(0, "fd", &fd) || !args.U64(1, "byteOffset", &position) || !args.Bool(2, "hole", &hole)) return env.Undefined();
  uint64_t found = 0;
  int err = SeekExtent(fd, position, hole, &found);
  Napi::Object o = Napi::Object::New(env);
  o.Set("errno", Napi::Number::New(env, err));
  o.Set("byteOffset", Napi::Number::New(env, static_cast<double>(found)));
  return o;
}

// Buffers for O_DIRECT: aligned to 4096, zero-filled, freed when collected.
Napi::Value AllocAligned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t bytes;
  if (!Args(info, "allocAligned").U64(0, "bytes", &bytes)) return env.Undefined();
  size_t length = static_cast<size_t>(bytes);
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
  exports.Set("seekExtent", Napi::Function::New(env, SeekExtentFn, "seekExtent"));
  exports.Set("allocAligned", Napi::Function::New(env, AllocAligned, "allocAligned"));
  InitIoWorkers(env, exports);
  return exports;
}

}  // namespace dmtool

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dmtool::Init(env, exports); }

NODE_API_MODULE(dmtool_native, InitModule)
