// Plain POSIX I/O helpers shared by the sync and async entry points.
// Each returns 0 or a positive errno; none of them throws or touches JS.
#pragma once
#include <cstddef>
#include <cstdint>
#include <napi.h>

namespace dmtool {

struct DeviceInfo {
  int fd = -1;
  uint64_t sizeBytes = 0;
  uint32_t logicalBlockSize = 512;
  uint32_t physicalBlockSize = 512;
  bool isBlockDevice = false;
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t rdev = 0;
};

// Advisory whole-file lock (flock) taken right after open, without waiting.
enum class LockMode { kNone = 0, kShared = 1, kExclusive = 2 };

// A regular file `open` creates (O_CREAT | O_EXCL) and sizes, or removes again if that fails.
struct CreateRequest {
  bool create = false;
  uint64_t sizeBytes = 0;
};

int OpenDevice(const char* path, bool write, bool direct, bool exclusive, LockMode lock, const CreateRequest& create,
               DeviceInfo* out);
// Opens `path` read-only only to hold a lock on it; *fdOut is the holder.
int LockPath(const char* path, LockMode lock, int* fdOut);
int ReadFully(int fd, uint8_t* buf, size_t length, uint64_t position, size_t* done);
int WriteFully(int fd, const uint8_t* buf, size_t length, uint64_t position, size_t* done);
// WriteFully whose bytes are durable on return (FUA): pwritev2 with RWF_DSYNC, else pwrite then fdatasync.
int WriteFullyDurable(int fd, const uint8_t* buf, size_t length, uint64_t position, size_t* done);
int DataSync(int fd);
int ZeroRange(int fd, bool isBlockDevice, uint64_t position, uint64_t length);
int DiscardRange(int fd, bool isBlockDevice, uint64_t position, uint64_t length);
// lseek SEEK_DATA (hole false) or SEEK_HOLE from `position`: ENXIO when no data follows.
int SeekExtent(int fd, uint64_t position, bool hole, uint64_t* found);

// Registers the async entry points on `exports`.
void InitIoWorkers(Napi::Env env, Napi::Object exports);

}  // namespace dmtool
