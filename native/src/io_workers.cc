// Async entry points. Each runs its POSIX call on libuv's thread pool and
// calls back with plain numbers (errno, bytes done); the TypeScript loader
// turns those into typed errors. No policy lives here.
#include <errno.h>

#include <thread>
#include <vector>

#include "args.h"
#include "io.h"

namespace dmtool {
namespace {

// Keeps the JS buffer alive and gives the raw pointer to the I/O thread.
struct PinnedBuffer {
  Napi::ObjectReference ref;
  uint8_t* data = nullptr;
  size_t length = 0;

  void Pin(const Napi::Buffer<uint8_t>& b) {
    ref = Napi::Persistent(b.As<Napi::Object>());
    data = b.Data();
    length = b.Length();
  }
};

class RwWorker : public Napi::AsyncWorker {
 public:
  RwWorker(Napi::Function cb, bool write, int fd, const Napi::Buffer<uint8_t>& buf, size_t bufOffset, size_t length,
           uint64_t position, bool durable = false)
      : Napi::AsyncWorker(cb),
        write_(write),
        durable_(durable),
        fd_(fd),
        bufOffset_(bufOffset),
        length_(length),
        position_(position) {
    buffer_.Pin(buf);
  }
  void Execute() override {
    uint8_t* p = buffer_.data + bufOffset_;
    if (!write_) err_ = ReadFully(fd_, p, length_, position_, &done_);
    else if (durable_) err_ = WriteFullyDurable(fd_, p, length_, position_, &done_);
    else err_ = WriteFully(fd_, p, length_, position_, &done_);
  }
  void OnOK() override {
    Napi::Env env = Env();
    Callback().Call({Napi::Number::New(env, err_), Napi::Number::New(env, static_cast<double>(done_))});
  }

 private:
  bool write_;
  bool durable_;
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
  CopyOutWorker(Napi::Function cb, int srcFd, uint64_t srcPosition, size_t length, const Napi::Buffer<uint8_t>& buf,
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
  ScatterWorker(Napi::Function cb, int srcFd, uint64_t srcPosition, size_t spanLength, const Napi::Buffer<uint8_t>& buf,
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

// Each entry point checks every argument (args.h) before it queues work: a
// call that throws has done no I/O.

Napi::Value Scatter(const Napi::CallbackInfo& info) {
  // (srcFd, srcPosition, spanLength, buffer, destFd, pieces: Float64Array [bufOffset, destPosition, length]*, cb)
  Args args(info, "scatter");
  int srcFd, destFd;
  uint64_t srcPosition, spanLength;
  Napi::Buffer<uint8_t> buf;
  Napi::Float64Array arr;
  Napi::Function cb;
  if (!args.Fd(0, "srcFd", &srcFd) || !args.U64(1, "srcPosition", &srcPosition) || !args.U64(2, "spanLength", &spanLength) ||
      !args.Buffer(3, "buffer", &buf) || !args.Fd(4, "destFd", &destFd) || !args.Float64Array(5, "pieces", &arr) ||
      !args.Function(6, "callback", &cb) || !args.Within("spanLength", 0, spanLength, buf.Length())) {
    return info.Env().Undefined();
  }
  if (arr.ElementLength() % 3 != 0) {
    args.RangeError("pieces", "must hold [bufOffset, destPosition, length] triples (got " +
                                  std::to_string(arr.ElementLength()) + " numbers)");
    return info.Env().Undefined();
  }
  std::vector<double> pieces(arr.Data(), arr.Data() + arr.ElementLength());
  for (size_t i = 0; i < pieces.size(); i += 3) {
    std::string name = "pieces[" + std::to_string(i / 3) + "]";
    uint64_t bufOffset, destPosition, length;
    if (!args.U64Number(pieces[i], name + ".bufOffset", &bufOffset) ||
        !args.U64Number(pieces[i + 1], name + ".destPosition", &destPosition) ||
        !args.U64Number(pieces[i + 2], name + ".length", &length) ||
        !args.Within(name, bufOffset, length, spanLength, "the span")) {
      return info.Env().Undefined();
    }
  }
  auto* w = new ScatterWorker(cb, srcFd, srcPosition, static_cast<size_t>(spanLength), buf, destFd, std::move(pieces));
  w->Queue();
  return info.Env().Undefined();
}

Napi::Value Rw(const Napi::CallbackInfo& info, bool write, bool durable = false) {
  // (fd, buffer, bufOffset, length, position, cb)
  Args args(info, durable ? "writeDurable" : write ? "write" : "read");
  int fd;
  Napi::Buffer<uint8_t> buf;
  uint64_t bufOffset, length, position;
  Napi::Function cb;
  if (!args.Fd(0, "fd", &fd) || !args.Buffer(1, "buffer", &buf) || !args.U64(2, "bufOffset", &bufOffset) ||
      !args.U64(3, "length", &length) || !args.U64(4, "position", &position) || !args.Function(5, "callback", &cb) ||
      !args.Within("bufOffset + length", bufOffset, length, buf.Length())) {
    return info.Env().Undefined();
  }
  auto* w =
      new RwWorker(cb, write, fd, buf, static_cast<size_t>(bufOffset), static_cast<size_t>(length), position, durable);
  w->Queue();
  return info.Env().Undefined();
}
Napi::Value Read(const Napi::CallbackInfo& info) { return Rw(info, false); }
Napi::Value Write(const Napi::CallbackInfo& info) { return Rw(info, true); }
Napi::Value WriteDurable(const Napi::CallbackInfo& info) { return Rw(info, true, true); }

Napi::Value DataSyncAsync(const Napi::CallbackInfo& info) {
  // (fd, cb)
  Args args(info, "datasync");
  int fd;
  Napi::Function cb;
  if (!args.Fd(0, "fd", &fd) || !args.Function(1, "callback", &cb)) return info.Env().Undefined();
  auto* w = new RangeWorker(cb, RangeOp::kSync, fd, false, 0, 0);
  w->Queue();
  return info.Env().Undefined();
}

Napi::Value Range(const Napi::CallbackInfo& info, RangeOp op) {
  // (fd, isBlockDevice, position, length, cb)
  Args args(info, op == RangeOp::kZero ? "zeroRange" : "discard");
  int fd;
  bool isBlock;
  uint64_t position, length;
  Napi::Function cb;
  if (!args.Fd(0, "fd", &fd) || !args.Bool(1, "isBlockDevice", &isBlock) || !args.U64(2, "position", &position) ||
      !args.U64(3, "length", &length) || !args.Function(4, "callback", &cb)) {
    return info.Env().Undefined();
  }
  auto* w = new RangeWorker(cb, op, fd, isBlock, position, length);
  w->Queue();
  return info.Env().Undefined();
}
Napi::Value Zero(const Napi::CallbackInfo& info) { return Range(info, RangeOp::kZero); }
Napi::Value Discard(const Napi::CallbackInfo& info) { return Range(info, RangeOp::kDiscard); }

Napi::Value CopyOut(const Napi::CallbackInfo& info) {
  // (srcFd, srcPosition, length, buffer, destFds[], destPositions[], writeOnReadError, cb)
  Args args(info, "copyOut");
  int srcFd;
  uint64_t srcPosition, length;
  Napi::Buffer<uint8_t> buf;
  Napi::Array fds, positions;
  bool writeOnReadError;
  Napi::Function cb;
  if (!args.Fd(0, "srcFd", &srcFd) || !args.U64(1, "srcPosition", &srcPosition) || !args.U64(2, "length", &length) ||
      !args.Buffer(3, "buffer", &buf) || !args.Array(4, "destFds", &fds) || !args.Array(5, "destPositions", &positions) ||
      !args.Bool(6, "writeOnReadError", &writeOnReadError) || !args.Function(7, "callback", &cb) ||
      !args.Within("length", 0, length, buf.Length())) {
    return info.Env().Undefined();
  }
  if (positions.Length() != fds.Length()) {
    args.RangeError("destPositions", "must have one entry per destination (got " + std::to_string(positions.Length()) +
                                         " for " + std::to_string(fds.Length()) + " destFds)");
    return info.Env().Undefined();
  }
  std::vector<int> destFds(fds.Length());
  std::vector<uint64_t> destPositions(fds.Length());
  for (uint32_t i = 0; i < fds.Length(); i++) {
    std::string index = "[" + std::to_string(i) + "]";
    if (!args.FdValue(fds.Get(i), "destFds" + index, &destFds[i]) ||
        !args.U64Value(positions.Get(i), "destPositions" + index, &destPositions[i])) {
      return info.Env().Undefined();
    }
  }
  auto* w = new CopyOutWorker(cb, srcFd, srcPosition, static_cast<size_t>(length), buf, std::move(destFds),
                              std::move(destPositions), writeOnReadError);
  w->Queue();
  return info.Env().Undefined();
}

}  // namespace

void InitIoWorkers(Napi::Env env, Napi::Object exports) {
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("writeDurable", Napi::Function::New(env, WriteDurable, "writeDurable"));
  exports.Set("datasync", Napi::Function::New(env, DataSyncAsync, "datasync"));
  exports.Set("zeroRange", Napi::Function::New(env, Zero, "zeroRange"));
  exports.Set("discard", Napi::Function::New(env, Discard, "discard"));
  exports.Set("copyOut", Napi::Function::New(env, CopyOut, "copyOut"));
  exports.Set("scatter", Napi::Function::New(env, Scatter, "scatter"));
}

}  // namespace dmtool
