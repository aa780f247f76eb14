#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io.h"

namespace dmtool {

// flock(2) on an open descriptor, never waiting: EWOULDBLOCK when another
// open file description holds a conflicting lock. Held until the fd closes.
static int LockFd(int fd, LockMode lock) {
  if (lock == LockMode::kNone) return 0;
  int op = (lock == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | LOCK_NB;
  while (flock(fd, op) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

int LockPath(const char* path, LockMode lock, int* fdOut) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int e = LockFd(fd, lock);
  if (e != 0) {
    close(fd);
    return e;
  }
  *fdOut = fd;
  return 0;
}

int OpenDevice(const char* path, bool write, bool direct, bool exclusive, LockMode lock, const CreateRequest& create,
               DeviceInfo* out) {
  struct stat st;
  bool isBlock = false;
  if (!create.create) {
    if (stat(path, &st) != 0) return errno;
    isBlock = S_ISBLK(st.st_mode);
    if (!isBlock && !S_ISREG(st.st_mode)) return ENODEV;
  }

  int flags = (write ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  if (direct) flags |= O_DIRECT;
  // On a block device O_EXCL claims it exclusively: the kernel answers EBUSY
  // when it is mounted or held by another exclusive opener (LVM, dm, md).
  if (isBlock && exclusive) flags |= O_EXCL;
  // A new regular file: O_EXCL makes it ours (never an existing file or a
  // symlink's target); 0666 leaves the mode to the umask, as cp and dd do.
  if (create.create) flags |= O_CREAT | O_EXCL;
  int fd = open(path, flags, 0666);
  if (fd < 0) return errno;

  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return e;
  }
  int lockErr = LockFd(fd, lock);
  if (lockErr == 0 && create.create && ftruncate(fd, static_cast<off_t>(create.sizeBytes)) != 0) lockErr = errno;
  if (lockErr == 0 && create.create && fstat(fd, &st) != 0) lockErr = errno;
  if (lockErr != 0) {
    close(fd);
    if (create.create) unlink(path);  // nothing left behind that looks like a copy
    return lockErr;
  }
  out->fd = fd;
  out->isBlockDevice = S_ISBLK(st.st_mode);
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  out->rdev = st.st_rdev;
  if (out->isBlockDevice) {
    uint64_t size = 0;
    int lbs = 512;
    unsigned int pbs = 512;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || ioctl(fd, BLKSSZGET, &lbs) != 0 ||
        ioctl(fd, BLKPBSZGET, &pbs) != 0) {
      int e = errno;
      close(fd);
      return e;
    }
    int readOnly = 0;
    if (write && ioctl(fd, BLKROGET, &readOnly) == 0 && readOnly) {
      close(fd);
      return EROFS;  // the kernel would accept the open and fail every write
    }
    out->sizeBytes = size;
    out->logicalBlockSize = static_cast<uint32_t>(lbs);
    out->physicalBlockSize = pbs;
  } else {
    out->sizeBytes = static_cast<uint64_t>(st.st_size);
    out->logicalBlockSize = 512;
    out->physicalBlockSize = st.st_blksize > 0 ? static_cast<uint32_t>(st.st_blksize) : 4096;
  }
  return 0;
}

int ReadFully(int fd, uint8_t* buf, size_t length, uint64_t position, size_t* done) {
  size_t got = 0;
  while (got < length) {
    ssize_t n = pread(fd, buf + got, length - got, static_cast<off_t>(position + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      *done = got;
      return errno;
    }
    if (n == 0) break;  // end of device: the caller decides whether that is an error
    got += static_cast<size_t>(n);
  }
  *done = got;
  return 0;
}

int WriteFully(int fd, const uint8_t* buf, size_t length, uint64_t position, size_t* done) {
  size_t put = 0;
  while (put < length) {
    ssize_t n = pwrite(fd, buf + put, length - put, static_cast<off_t>(position + put));
    if (n < 0) {
      if (errno == EINTR) continue;
      *done = put;
      return errno;
    }
    if (n == 0) {
      *done = put;
      return ENOSPC;
    }
    put += static_cast<size_t>(n);
  }
  *done = put;
  return 0;
}

int DataSync(int fd) { return fdatasync(fd) == 0 ? 0 : errno; }

int WriteFullyDurable(int fd, const uint8_t* buf, size_t length, uint64_t position, size_t* done) {
  size_t put = 0;
#ifdef RWF_DSYNC
  // Each call's bytes are durable when it returns, so a short write loses nothing already counted.
  while (put < length) {
    iovec iov = {const_cast<uint8_t*>(buf + put), length - put};
    ssize_t n = pwritev2(fd, &iov, 1, static_cast<off_t>(position + put), RWF_DSYNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EOPNOTSUPP || errno == ENOSYS) break;  // a kernel or libc without RWF_DSYNC
      *done = put;
      return errno;
    }
    if (n == 0) {
      *done = put;
      return ENOSPC;
    }
    put += static_cast<size_t>(n);
  }
  if (put == length) {
    *done = put;
    return 0;
  }
#endif
  size_t rest = 0;
  int err = WriteFully(fd, buf + put, length - put, position + put, &rest);
  *done = put + rest;
  return err != 0 ? err : DataSync(fd);
}

int ZeroRange(int fd, bool isBlockDevice, uint64_t position, uint64_t length) {
  if (isBlockDevice) {
    uint64_t range[2] = {position, length};
    return ioctl(fd, BLKZEROOUT, range) == 0 ? 0 : errno;
  }
  int mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  return fallocate(fd, mode, static_cast<off_t>(position), static_cast<off_t>(length)) == 0 ? 0 : errno;
}

int DiscardRange(int fd, bool isBlockDevice, uint64_t position, uint64_t length) {
  if (isBlockDevice) {
    uint64_t range[2] = {position, length};
    return ioctl(fd, BLKDISCARD, range) == 0 ? 0 : errno;
  }
  int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  return fallocate(fd, mode, static_cast<off_t>(position), static_cast<off_t>(length)) == 0 ? 0 : errno;
}

int SeekExtent(int fd, uint64_t position, bool hole, uint64_t* found) {
  off_t r = lseek(fd, static_cast<off_t>(position), hole ? SEEK_HOLE : SEEK_DATA);
  if (r < 0) return errno;
  *found = static_cast<uint64_t>(r);
  return 0;
}

}  // namespace dmtool
