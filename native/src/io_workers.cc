// Async entry points. Each runs its POSIX call on libuv's thread pool and
// calls back with plain numbers (errno, bytes done); the TypeScript loader
// turns those into typed errors. No policy lives here.
#include <errno.h>

#include <thread>
#include <vector>

#include "io.h"

namespace dmtool {
namespace {

uint64_t ToU64(const Napi::Value& v) { return static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue()); }

// Keeps the JS buffer alive and gives the raw pointer to the I/O thread.
struct PinnedBuffer {
  Napi::ObjectReference ref;
  uint8_t* data = nullptr;
  size_t length = 0;

  void Pin(const Napi::Value& v) {
    Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
    ref = Napi::Persistent(b.As<Napi::Object>());
    data = b.Data();
    length = b.Length();
  }
};

class RwWorker : public Napi::AsyncWorker {
 public:
  RwWorker(Napi::Function cb, bool write, int fd, const Napi::Value& buf, size_t bufOffset, size_t length,
           uint64_t position)
      : Napi::AsyncWorker(cb), write_(write), fd_(fd), bufOffset_(bufOffset), length_(length), position_(position) {
    buffer_.Pin(buf);
  }
  void Execute() override {
    uint8_t* p = buffer_.data + bufOffset_;
    err_ = write_ ? WriteFully(fd_, p, length_, position_, &done_) : ReadFully(fd_, p, length_, position_, &done_);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Callback().Call({Napi::Number::New(env, err_), Napi::Number::New(env, static_cast<double>(done_))});
  }

 private:
  bool write_;
  int fd_;
  PinnedBuffer buffer_;
  size_t bufOffset_, length_;
  uint64_t position_;
  int err_ = 0;
  size_t done_ = 0;
};

enum class RangeOp { kSync, kZero, kDiscard };

class RangeWorker : public Napi::AsyncWorker {
 public:
  RangeWorker(Napi::Function cb, RangeOp op, int fd, bool isBlock, uint64_t position, uint64_t length)
      : Napi::AsyncWorker(cb), op_(op), fd_(fd), isBlock_(isBlock), position_(position), length_(length) {}
  void Execute() override {
    switch (op_) {
      case RangeOp::kSync: err_ = DataSync(fd_); break;
      case RangeOp::kZero: err_ = ZeroRange(fd_, isBlock_, position_, length_); break;
      case RangeOp::kDiscard: err_ = DiscardRange(fd_, isBlock_, position_, length_); break;
    }
  }
  void OnOK() override { Callback().Call({Napi::Number::New(Env(), err_)}); }

 private:
  RangeOp op_;
  int fd_;
  bool isBlock_;
  uint64_t position_, length_;
  int err_ = 0;
};

// One kcopyd sub-job: read the source range once into the buffer, then write
// it to every destination. A failing destination does not stop the others.
class CopyOutWorker : public Napi::AsyncWorker {
 public:
  CopyOutWorker(Napi::Function cb, int srcFd, uint64_t srcPosition, size_t length, const Napi::Value& buf,
                std::vector<int> destFds, std::vector<uint64_t> destPositions, bool writeOnReadError)
      : Napi::AsyncWorker(cb),
        srcFd_(srcFd),
        srcPosition_(srcPosition),
        length_(length),
        destFds_(std::move(destFds)),
        destPositions_(std::move(destPositions)),
        writeOnReadError_(writeOnReadError),
        writeErr_(destFds_.size(), 0),
        writeDone_(destFds_.size(), 0) {
    buffer_.Pin(buf);
  }
  void Execute() override {
    readErr_ = ReadFully(srcFd_, buffer_.data, length_, srcPosition_, &readDone_);
    if (readErr_ == 0 && readDone_ < length_) readErr_ = EIO;  // source ended early
    if ((readErr_ != 0 && !writeOnReadError_) || destFds_.empty()) return;
    // Destinations are written in parallel: the first on this thread, the
    // others on short-lived threads, so N legs cost about one write's time.
    std::vector<std::thread> helpers;
    for (size_t i = 1; i < destFds_.size(); i++) {
      helpers.emplace_back([this, i] {
        writeErr_[i] = WriteFully(destFds_[i], buffer_.data, length_, destPositions_[i], &writeDone_[i]);
      });
    }
    writeErr_[0] = WriteFully(destFds_[0], buffer_.data, length_, destPositions_[0], &writeDone_[0]);
    for (auto& t : helpers) t.join();
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Array errs = Napi::Array::New(env, writeErr_.size());
    for (size_t i = 0; i < writeErr_.size(); i++) errs.Set(static_cast<uint32_t>(i), Napi::Number::New(env, writeErr_[i]));
    Callback().Call({Napi::Number::New(env, readErr_), Napi::Number::New(env, static_cast<double>(readDone_)), errs});
  }

 private:
  int srcFd_;
  uint64_t srcPosition_;
  size_t length_;
  PinnedBuffer buffer_;
  std::vector<int> destFds_;
  std::vector<uint64_t> destPositions_;
  bool writeOnReadError_;
  int readErr_ = 0;
  size_t readDone_ = 0;
  std::vector<int> writeErr_;
  std::vector<size_t> writeDone_;
};

// Many small copies between two devices in one call: read a source span
// once, then write pieces of it to scattered destination offsets. Stops at
// the first failing write and reports its index.
class ScatterWorker : public Napi::AsyncWorker {
 public:
  ScatterWorker(Napi::Function cb, int srcFd, uint64_t srcPosition, size_t spanLength, const Napi::Value& buf,
                int destFd, std::vector<double> pieces)
      : Napi::AsyncWorker(cb),
        srcFd_(srcFd),
        srcPosition_(srcPosition),
        spanLength_(spanLength),
        destFd_(destFd),
        pieces_(std::move(pieces)) {
    buffer_.Pin(buf);
  }
  void Execute() override {
    size_t got = 0;
    readErr_ = ReadFully(srcFd_, buffer_.data, spanLength_, srcPosition_, &got);
    if (readErr_ == 0 && got < spanLength_) readErr_ = EIO;
    if (readErr_ != 0) return;
    for (size_t i = 0; i + 2 < pieces_.size(); i += 3) {
      size_t done = 0;
      size_t bufOffset = static_cast<size_t>(pieces_[i]);
      int err = WriteFully(destFd_, buffer_.data + bufOffset, static_cast<size_t>(pieces_[i + 2]),
                           static_cast<uint64_t>(pieces_[i + 1]), &done);
      if (err != 0) {
        writeErr_ = err;
        failedIndex_ = static_cast<int>(i / 3);
        return;
      }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Callback().Call({Napi::Number::New(env, readErr_), Napi::Number::New(env, writeErr_), Napi::Number::New(env, failedIndex_)});
  }

 private:
  int srcFd_;
  uint64_t srcPosition_;
  size_t spanLength_;
  PinnedBuffer buffer_;
  int destFd_;
  std::vector<double> pieces_;
  int readErr_ = 0;
  int writeErr_ = 0;
  int failedIndex_ = -1;
};

Napi::Value Scatter(const Napi::CallbackInfo& info) {
  // (srcFd, srcPosition, spanLength, buffer, destFd, pieces: Float64Array [bufOffset, destPosition, length]*, cb)
  Napi::Float64Array arr = info[5].As<Napi::Float64Array>();
  std::vector<double> pieces(arr.Data(), arr.Data() + arr.ElementLength());
  auto* w = new ScatterWorker(info[6].As<Napi::Function>(), info[0].As<Napi::Number>().Int32Value(), ToU64(info[1]),
                              static_cast<size_t>(ToU64(info[2])), info[3], info[4].As<Napi::Number>().Int32Value(),
                              std::move(pieces));
  w->Queue();
  return info.Env().Undefined();
}

Napi::Value Rw(const Napi::CallbackInfo& info, bool write) {
  // (fd, buffer, bufOffset, length, position, cb)
  auto* w = new RwWorker(info[5].As<Napi::Function>(), write, info[0].As<Napi::Number>().Int32Value(), info[1],
                         static_cast<size_t>(ToU64(info[2])), static_cast<size_t>(ToU64(info[3])), ToU64(info[4]));
  w->Queue();
  return info.Env().Undefined();
}
Napi::Value Read(const Napi::CallbackInfo& info) { return Rw(info, false); }
Napi::Value Write(const Napi::CallbackInfo& info) { return Rw(info, true); }

Napi::Value DataSyncAsync(const Napi::CallbackInfo& info) {
  // (fd, cb)
  auto* w = new RangeWorker(info[1].As<Napi::Function>(), RangeOp::kSync, info[0].As<Napi::Number>().Int32Value(),
                            false, 0, 0);
  w->Queue();
  return info.Env().Undefined();
}

Napi::Value Range(const Napi::CallbackInfo& info, RangeOp op) {
  // (fd, isBlockDevice, position, length, cb)
  auto* w = new RangeWorker(info[4].As<Napi::Function>(), op, info[0].As<Napi::Number>().Int32Value(),
                            info[1].As<Napi::Boolean>().Value(), ToU64(info[2]), ToU64(info[3]));
  w->Queue();
  return info.Env().Undefined();
}
Napi::Value Zero(const Napi::CallbackInfo& info) { return Range(info, RangeOp::kZero); }
Napi::Value Discard(const Napi::CallbackInfo& info) { return Range(info, RangeOp::kDiscard); }

Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  // (srcFd, srcPosition, length, buffer, destFds[], destPositions[], writeOnReadError, cb)
  Napi::Array fds = info[4].As<Napi::Array>();
  Napi::Array positions = info[5].As<Napi::Array>();
  std::vector<int> destFds;
  std::vector<uint64_t> destPositions;
  for (uint32_t i = 0; i < fds.Length(); i++) {
    destFds.push_back(fds.Get(i).As<Napi::Number>().Int32Value());
    destPositions.push_back(ToU64(positions.Get(i)));
  }
  auto* w = new CopyOutWorker(info[7].As<Napi::Function>(), info[0].As<Napi::Number>().Int32Value(), ToU64(info[1]),
                              static_cast<size_t>(ToU64(info[2])), info[3], std::move(destFds),
                              std::move(destPositions), info[6].As<Napi::Boolean>().Value());
  w->Queue();
  return info.Env().Undefined();
}

}  // namespace

void InitIoWorkers(Napi::Env env, Napi::Object exports) {
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("datasync", Napi::Function::New(env, DataSyncAsync, "datasync"));
  exports.Set("zeroRange", Napi::Function::New(env, Zero, "zeroRange"));
  exports.Set("discard", Napi::Function::New(env, Discard, "discard"));
  exports.Set("copyOut", Napi::Function::New(env, CopyOut, "copyOut"));
  exports.Set("scatter", Napi::Function::New(env, Scatter, "scatter"));
}

}  // namespace dmtool
