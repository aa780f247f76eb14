// A list of scatter copies in one call on one thread: for each span, read it
// from the source into the buffer, then write its pieces to their places on
// the destination. Buffered 4 KiB writes into one file cost least from a
// single thread (concurrent writers contend on the inode lock, and io_uring
// hands buffered file writes to its worker threads); one call per list also
// spares a thread-pool round trip per span. Stops at the first failure.
#include <errno.h>

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
  ScatterListWorker(Napi::Function cb, int srcFd, int destFd, const Napi::Buffer<uint8_t>& buf, std::vector<Span> spans,
                    std::vector<Piece> pieces)
      : Napi::AsyncWorker(cb), srcFd_(srcFd), destFd_(destFd), spans_(std::move(spans)), pieces_(std::move(pieces)) {
    ref_ = Napi::Persistent(buf.As<Napi::Object>());
    data_ = buf.Data();
  }
  void Execute() override {
    for (size_t s = 0; s < spans_.size(); s++) {
      const Span& span = spans_[s];
      size_t got = 0;
      readErr_ = ReadFully(srcFd_, data_, span.bytes, span.srcPosition, &got);
      if (readErr_ == 0 && got < span.bytes) readErr_ = EIO;  // source ended early
      if (readErr_ != 0) {
        failedSpan_ = static_cast<double>(s);
        readBytes_ = static_cast<double>(got);
        return;
      }
      for (size_t i = span.firstPiece; i < span.firstPiece + span.pieces; i++) {
        const Piece& p = pieces_[i];
        size_t done = 0;
        writeErr_ = WriteFully(destFd_, data_ + p.spanOffset, p.bytes, p.destPosition, &done);
        if (writeErr_ != 0) {
          failedSpan_ = static_cast<double>(s);
          failedPiece_ = static_cast<double>(i - span.firstPiece);
          return;
        }
      }
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Callback().Call({Napi::Number::New(env, readErr_), Napi::Number::New(env, readBytes_), Napi::Number::New(env, writeErr_),
                     Napi::Number::New(env, failedSpan_), Napi::Number::New(env, failedPiece_)});
  }

 private:
  int srcFd_, destFd_;
  Napi::ObjectReference ref_;
  uint8_t* data_ = nullptr;
  std::vector<Span> spans_;
  std::vector<Piece> pieces_;
  int readErr_ = 0;
  int writeErr_ = 0;
  double readBytes_ = 0;
  double failedSpan_ = -1;
  double failedPiece_ = -1;
};

// (srcFd, destFd, buffer, spans: Float64Array [srcPosition, spanBytes, pieceCount]*,
//  pieces: Float64Array [spanOffset, destPosition, bytes]*, cb(readErrno, readBytes, writeErrno, failedSpan, failedPiece))
// Every argument is checked before any work is queued: a call that throws has done no I/O.
Napi::Value ScatterList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Args args(info, "scatterList");
  int srcFd, destFd;
  Napi::Buffer<uint8_t> buf;
  Napi::Float64Array spanArr, pieceArr;
  Napi::Function cb;
  if (!args.Fd(0, "srcFd", &srcFd) || !args.Fd(1, "destFd", &destFd) || !args.Buffer(2, "buffer", &buf) ||
      !args.Float64Array(3, "spans", &spanArr) || !args.Float64Array(4, "pieces", &pieceArr) ||
      !args.Function(5, "callback", &cb)) {
    return env.Undefined();
  }
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
        !args.U64Number(sp[3 * s + 2], name + ".pieceCount", &count) || !args.Within(name, 0, bytes, buf.Length())) {
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
  auto* w = new ScatterListWorker(cb, srcFd, destFd, buf, std::move(spans), std::move(pieces));
  w->Queue();
  return env.Undefined();
}

}  // namespace

void InitScatterList(Napi::Env env, Napi::Object exports) {
  exports.Set("scatterList", Napi::Function::New(env, ScatterList, "scatterList"));
}

}  // namespace dmtool
