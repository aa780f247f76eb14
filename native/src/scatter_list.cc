// A list of scatter copies in one call: each span is read from the source
// into one of two buffers, then its pieces are written to their places on
// the destination. One thread reads while the other writes the span before,
// so every write comes from one thread: buffered small writes into one file
// cost least that way (concurrent writers contend on the inode lock, and
// io_uring hands buffered file writes to its worker threads); one call per
// list also spares a thread-pool round trip per span. Spans are written in
// order and the call stops at the first failure.
#include <errno.h>
#include <fcntl.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "args.h"
#include "io.h"
#include "scatter_list.h"

namespace dmtool {
namespace {

struct Span {
  uint64_t srcPosition;
  size_t bytes;
  size_t firstPiece;
  size_t pieces;
};

struct Piece {
  size_t spanOffset;
  uint64_t destPosition;
  size_t bytes;
};

class ScatterListWorker : public Napi::AsyncWorker {
 public:
  ScatterListWorker(Napi::Function cb, int srcFd, int destFd, const Napi::Buffer<uint8_t>& buf0,
                    const Napi::Buffer<uint8_t>& buf1, std::vector<Span> spans, std::vector<Piece> pieces)
      : Napi::AsyncWorker(cb), srcFd_(srcFd), destFd_(destFd), spans_(std::move(spans)), pieces_(std::move(pieces)) {
    refs_[0] = Napi::Persistent(buf0.As<Napi::Object>());
    refs_[1] = Napi::Persistent(buf1.As<Napi::Object>());
    data_[0] = buf0.Data();
    data_[1] = buf1.Data();
  }

  void Execute() override {
    if (spans_.empty()) return;
    std::thread reader([this] { ReadSpans(); });
    WriteSpans();
    reader.join();
  }

  void OnOK() override {
    Napi::Env env = Env();
    Callback().Call({Napi::Number::New(env, readErr_), Napi::Number::New(env, readBytes_), Napi::Number::New(env, writeErr_),
                     Napi::Number::New(env, failedSpan_), Napi::Number::New(env, failedPiece_)});
  }

 private:
  // Span s goes to buffer s % 2, once span s - 2 is written.
  void ReadSpans() {
    PrefetchSpans();
    for (size_t s = 0; s < spans_.size(); s++) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return stop_ || written_ + 2 > s; });
        if (stop_) return;
      }
      const Span& span = spans_[s];
      size_t got = 0;
      int err = ReadFully(srcFd_, data_[s % 2], span.bytes, span.srcPosition, &got);
      if (err == 0 && got < span.bytes) err = EIO;  // source ended early
      std::lock_guard<std::mutex> lock(mutex_);
      if (err != 0) {
        readErr_ = err;
        readBytes_ = static_cast<double>(got);
        readFailedAt_ = s;
        changed_.notify_all();
        return;
      }
      read_ = s + 1;
      changed_.notify_all();
    }
  }

  // Asks the kernel to start reading every span now, merged where they
  // touch: spans need not follow the previous call's (a merge takes its
  // batches from the end of the COW), so readahead alone would wait for
  // the first read of each call.
  void PrefetchSpans() const {
    size_t s = 0;
    while (s < spans_.size()) {
      uint64_t start = spans_[s].srcPosition;
      uint64_t end = start + spans_[s].bytes;
      for (s++; s < spans_.size() && spans_[s].srcPosition >= start && spans_[s].srcPosition <= end; s++) {
        end = std::max(end, spans_[s].srcPosition + spans_[s].bytes);
      }
      posix_fadvise(srcFd_, static_cast<off_t>(start), static_cast<off_t>(end - start), POSIX_FADV_WILLNEED);
    }
  }

  void WriteSpans() {
    for (size_t s = 0; s < spans_.size(); s++) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return read_ > s || readFailedAt_ == s; });
        if (readFailedAt_ == s) {
          failedSpan_ = static_cast<double>(s);
          return;
        }
      }
      const Span& span = spans_[s];
      for (size_t i = span.firstPiece; i < span.firstPiece + span.pieces; i++) {
        const Piece& p = pieces_[i];
        size_t done = 0;
        int err = WriteFully(destFd_, data_[s % 2] + p.spanOffset, p.bytes, p.destPosition, &done);
        if (err != 0) {
          std::lock_guard<std::mutex> lock(mutex_);
          writeErr_ = err;
          failedSpan_ = static_cast<double>(s);
          failedPiece_ = static_cast<double>(i - span.firstPiece);
          stop_ = true;
          changed_.notify_all();
          return;
        }
      }
      std::lock_guard<std::mutex> lock(mutex_);
      written_ = s + 1;
      changed_.notify_all();
    }
  }

  int srcFd_, destFd_;
  Napi::ObjectReference refs_[2];
  uint8_t* data_[2] = {nullptr, nullptr};
  std::vector<Span> spans_;
  std::vector<Piece> pieces_;

  std::mutex mutex_;
  std::condition_variable changed_;
  size_t read_ = 0;     // spans read, from the first
  size_t written_ = 0;  // spans written, from the first
  size_t readFailedAt_ = SIZE_MAX;
  bool stop_ = false;  // a write failed: the reader stops too

  int readErr_ = 0;
  int writeErr_ = 0;
  double readBytes_ = 0;
  double failedSpan_ = -1;
  double failedPiece_ = -1;
};

// (srcFd, destFd, buffer0, buffer1, spans: Float64Array [srcPosition, spanBytes, pieceCount]*,
//  pieces: Float64Array [spanOffset, destPosition, bytes]*, cb(readErrno, readBytes, writeErrno, failedSpan, failedPiece))
// Every argument is checked before any work is queued: a call that throws has done no I/O.
Napi::Value ScatterList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "scatterList");
  int srcFd, destFd;
  Napi::Buffer<uint8_t> buf0, buf1;
  Napi::Float64Array spanArr, pieceArr;
  Napi::Function cb;
  if (!args.Fd(0, "srcFd", &srcFd) || !args.Fd(1, "destFd", &destFd) || !args.Buffer(2, "buffer0", &buf0) ||
      !args.Buffer(3, "buffer1", &buf1) || !args.Float64Array(4, "spans", &spanArr) ||
      !args.Float64Array(5, "pieces", &pieceArr) || !args.Function(6, "callback", &cb)) {
    return env.Undefined();
  }
  // The reader fills one buffer while the writer sends the other: they must not share memory.
  if (buf0.Data() < buf1.Data() + buf1.Length() && buf1.Data() < buf0.Data() + buf0.Length()) {
    args.RangeError("buffer1", "must not overlap buffer0");
    return env.Undefined();
  }
  const size_t bufBytes = std::min(buf0.Length(), buf1.Length());
  if (spanArr.ElementLength() % 3 != 0) {
    args.RangeError("spans", "must hold [srcPosition, spanBytes, pieceCount] triples (got " +
                                 std::to_string(spanArr.ElementLength()) + " numbers)");
    return env.Undefined();
  }
  if (pieceArr.ElementLength() % 3 != 0) {
    args.RangeError("pieces", "must hold [spanOffset, destPosition, bytes] triples (got " +
                                  std::to_string(pieceArr.ElementLength()) + " numbers)");
    return env.Undefined();
  }
  const double* sp = spanArr.Data();
  const double* pp = pieceArr.Data();
  size_t pieceCount = pieceArr.ElementLength() / 3;
  std::vector<Span> spans(spanArr.ElementLength() / 3);
  std::vector<Piece> pieces(pieceCount);
  size_t next = 0;
  for (size_t s = 0; s < spans.size(); s++) {
    std::string name = "spans[" + std::to_string(s) + "]";
    uint64_t srcPosition, bytes, count;
    if (!args.U64Number(sp[3 * s], name + ".srcPosition", &srcPosition) ||
        !args.U64Number(sp[3 * s + 1], name + ".spanBytes", &bytes) ||
        !args.U64Number(sp[3 * s + 2], name + ".pieceCount", &count) || !args.Within(name, 0, bytes, bufBytes, "the shorter buffer")) {
      return env.Undefined();
    }
    if (count > pieceCount - next) {
      args.RangeError(name + ".pieceCount", "runs past the " + std::to_string(pieceCount) + " pieces given");
      return env.Undefined();
    }
    spans[s] = {srcPosition, static_cast<size_t>(bytes), next, static_cast<size_t>(count)};
    for (size_t i = next; i < next + count; i++) {
      std::string pname = "pieces[" + std::to_string(i) + "]";
      uint64_t spanOffset, destPosition, length;
      if (!args.U64Number(pp[3 * i], pname + ".spanOffset", &spanOffset) ||
          !args.U64Number(pp[3 * i + 1], pname + ".destPosition", &destPosition) ||
          !args.U64Number(pp[3 * i + 2], pname + ".bytes", &length) || !args.Within(pname, spanOffset, length, bytes, "its span")) {
        return env.Undefined();
      }
      pieces[i] = {static_cast<size_t>(spanOffset), destPosition, static_cast<size_t>(length)};
    }
    next += count;
  }
  if (next != pieceCount) {
    args.RangeError("pieces", "holds " + std::to_string(pieceCount) + " pieces but the spans claim " + std::to_string(next));
    return env.Undefined();
  }
  auto* w = new ScatterListWorker(cb, srcFd, destFd, buf0, buf1, std::move(spans), std::move(pieces));
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitScatterList(Napi::Env env, Napi::Object exports) {
  exports.Set("scatterList", Napi::Function::New(env, ScatterList, "scatterList"));
}

}  // namespace dmtool
