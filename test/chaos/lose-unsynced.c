// The chaos runs' storage fault layer (test build only): an LD_PRELOAD library that lets the harness
// take a node's files back to what was durable, as a power cut would.
//
// For every file under MOM_CHAOS_DISK_ROOT (except SQLite's -shm index, which is never durable data),
// each write, truncation or allocation first appends an undo record (offset, the bytes it overwrites,
// the size before) to a journal in MOM_CHAOS_DISK_UNDO. An fsync or fdatasync of the file, through any
// descriptor, empties its journal: those writes are durable. Unlinking the file drops its journal;
// renaming it moves the journal along. After SIGKILL, disk-faults.ts applies each journal backwards,
// so every file holds exactly its content at its last fsync: every write not yet synced is lost.
//
// Metadata (creation, rename, unlink) is treated as durable at once; the node fsyncs its folders
// where that matters, which test/partition/durable-folders.test.ts and the tests using
// test/store/fs-recorder.ts check instead. Writes that bypass the C library (copy_file_range) are durable at once; the node
// fsyncs those files right after anyway. Without MOM_CHAOS_DISK_ROOT the library only passes calls on.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536
#define MAGIC 0x554e444fu /* "UNDO" */

enum { KIND_WRITE = 1, KIND_TRUNCATE = 2, KIND_EXTEND = 3 };

struct record {
  uint32_t magic;
  uint32_t kind;
  int64_t offset;
  int64_t old_len;     /* bytes of old content that follow */
  int64_t size_before; /* the file's size before the change */
};

struct entry {
  int state; /* 0 unknown, 1 tracked, 2 not tracked */
  dev_t dev;
  ino_t ino;
  char path[PATH_MAX];
};

static struct entry *table;
static char root[PATH_MAX];
static size_t root_len;
static char undo_dir[PATH_MAX];
static int enabled;
static pthread_mutex_t lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);
static int (*real_unlink)(const char *);
static int (*real_unlinkat)(int, const char *, int);
static int (*real_rename)(const char *, const char *);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_renameat2)(int, const char *, int, const char *, unsigned int);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off_t, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off_t, off_t);

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

__attribute__((constructor)) static void init(void) {
  RESOLVE(write);
  RESOLVE(pwrite);
  RESOLVE(pwrite64);
  RESOLVE(writev);
  RESOLVE(pwritev);
  RESOLVE(pwritev64);
  RESOLVE(pread);
  RESOLVE(ftruncate);
  RESOLVE(ftruncate64);
  RESOLVE(fsync);
  RESOLVE(fdatasync);
  RESOLVE(close);
  RESOLVE(unlink);
  RESOLVE(unlinkat);
  RESOLVE(rename);
  RESOLVE(renameat);
  RESOLVE(renameat2);
  RESOLVE(posix_fallocate);
  RESOLVE(posix_fallocate64);
  RESOLVE(fallocate);
  RESOLVE(fallocate64);
  const char *r = getenv("MOM_CHAOS_DISK_ROOT");
  const char *u = getenv("MOM_CHAOS_DISK_UNDO");
  if (r == NULL || u == NULL || r[0] != '/' || u[0] != '/') return;
  if (strlen(r) + 2 >= sizeof root || strlen(u) + 1 >= sizeof undo_dir) return;
  snprintf(root, sizeof root, "%s", r);
  root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = '\0';
  snprintf(undo_dir, sizeof undo_dir, "%s", u);
  table = calloc(MAX_FD, sizeof *table);
  enabled = table != NULL;
}

static void die(const char *what) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "lose-unsynced: %s failed: %s\n", what, strerror(errno));
  if (n > 0) real_write(2, msg, (size_t)n);
  abort();
}

static int under_root(const char *path) {
  if (strncmp(path, root, root_len) != 0 || path[root_len] != '/') return 0;
  size_t n = strlen(path);
  return !(n > 4 && strcmp(path + n - 4, "-shm") == 0);
}

/** The journal's name for a tracked path: the path with '/' written as '%'. */
static void journal_of(const char *path, char *out, size_t size) {
  int n = snprintf(out, size, "%s/", undo_dir);
  size_t k = (size_t)n;
  for (const char *p = path; *p != '\0' && k + 7 < size; p++) out[k++] = *p == '/' ? '%' : *p;
  snprintf(out + k, size - k, ".undo");
}

/** The tracked entry of fd, or NULL. Re-resolved whenever the descriptor's file changed. */
static struct entry *entry_of(int fd) {
  if (!enabled || fd < 0 || fd >= MAX_FD) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return NULL;
  struct entry *e = &table[fd];
  /* The name is read again every time: libuv closes descriptors with a raw system call, which this
     library does not see, so a descriptor number may come back for the same file (same device and
     inode) under another name, after a rename. */
  char link[64], now[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, now, sizeof now - 1);
  if (n < 0) return NULL;
  now[n] = '\0';
  if (e->state == 0 || e->dev != st.st_dev || e->ino != st.st_ino || strcmp(e->path, now) != 0) {
    memcpy(e->path, now, (size_t)n + 1);
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->state = under_root(e->path) ? 1 : 2;
  }
  return e->state == 1 ? e : NULL;
}

static void append_record(const struct entry *e, uint32_t kind, int fd, int64_t offset, int64_t old_len, int64_t size_before) {
  struct record rec = {MAGIC, kind, offset, old_len, size_before};
  size_t total = sizeof rec + (size_t)old_len;
  char *buf = malloc(total);
  if (buf == NULL) die("malloc");
  memcpy(buf, &rec, sizeof rec);
  if (old_len > 0) {
    // The descriptor may be write-only: read the old content through one of our own.
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int r = open(link, O_RDONLY | O_CLOEXEC);
    if (r < 0) die("open of the file for its old content");
    int64_t got = 0;
    while (got < old_len) {
      ssize_t n = real_pread(r, buf + sizeof rec + got, (size_t)(old_len - got), offset + got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) die("pread of the old content");
      got += n;
    }
    real_close(r);
  }
  char jpath[PATH_MAX + 64];
  journal_of(e->path, jpath, sizeof jpath);
  int j = open(jpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (j < 0) die("open of the journal");
  size_t done = 0;
  while (done < total) {
    ssize_t n = real_write(j, buf + done, total - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("write of the journal");
    done += (size_t)n;
  }
  real_close(j);
  free(buf);
}

static int64_t size_of(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  return st.st_size;
}

/** Before a write of len bytes at offset (-1: the descriptor's position). */
static void before_write(int fd, int64_t offset, size_t len) {
  struct entry *e = entry_of(fd);
  if (e == NULL || len == 0) return;
  int64_t size = size_of(fd);
  if (offset < 0) offset = (fcntl(fd, F_GETFL) & O_APPEND) ? size : (int64_t)lseek(fd, 0, SEEK_CUR);
  int64_t end = offset + (int64_t)len;
  int64_t old_end = end < size ? end : size;
  append_record(e, KIND_WRITE, fd, offset, old_end > offset ? old_end - offset : 0, size);
}

static void before_truncate(int fd, int64_t length) {
  struct entry *e = entry_of(fd);
  if (e == NULL) return;
  int64_t size = size_of(fd);
  if (length < size) append_record(e, KIND_TRUNCATE, fd, length, size - length, size);
  else append_record(e, KIND_EXTEND, fd, size, 0, size);
}

static void before_extend(int fd) {
  struct entry *e = entry_of(fd);
  if (e == NULL) return;
  int64_t size = size_of(fd);
  append_record(e, KIND_EXTEND, fd, size, 0, size);
}

static void synced(int fd) {
  struct entry *e = entry_of(fd);
  if (e == NULL) return;
  char jpath[PATH_MAX + 64];
  journal_of(e->path, jpath, sizeof jpath);
  if (truncate(jpath, 0) != 0 && errno != ENOENT) die("truncate of the journal");
}

static size_t iov_len(const struct iovec *iov, int n) {
  size_t t = 0;
  for (int i = 0; i < n; i++) t += iov[i].iov_len;
  return t;
}

#define LOCKED(stmt)         \
  pthread_mutex_lock(&lock); \
  stmt;                      \
  pthread_mutex_unlock(&lock)

ssize_t write(int fd, const void *b, size_t n) {
  ssize_t r;
  LOCKED(before_write(fd, -1, n); r = real_write(fd, b, n));
  return r;
}
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) {
  ssize_t r;
  LOCKED(before_write(fd, o, n); r = real_pwrite(fd, b, n, o));
  return r;
}
ssize_t pwrite64(int fd, const void *b, size_t n, off_t o) {
  ssize_t r;
  LOCKED(before_write(fd, o, n); r = real_pwrite64(fd, b, n, o));
  return r;
}
ssize_t writev(int fd, const struct iovec *v, int c) {
  ssize_t r;
  LOCKED(before_write(fd, -1, iov_len(v, c)); r = real_writev(fd, v, c));
  return r;
}
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t o) {
  ssize_t r;
  LOCKED(before_write(fd, o, iov_len(v, c)); r = real_pwritev(fd, v, c, o));
  return r;
}
ssize_t pwritev64(int fd, const struct iovec *v, int c, off_t o) {
  ssize_t r;
  LOCKED(before_write(fd, o, iov_len(v, c)); r = real_pwritev64(fd, v, c, o));
  return r;
}
int ftruncate(int fd, off_t len) {
  int r;
  LOCKED(before_truncate(fd, len); r = real_ftruncate(fd, len));
  return r;
}
int ftruncate64(int fd, off_t len) {
  int r;
  LOCKED(before_truncate(fd, len); r = real_ftruncate64(fd, len));
  return r;
}
int posix_fallocate(int fd, off_t o, off_t len) {
  int r;
  LOCKED(before_extend(fd); r = real_posix_fallocate(fd, o, len));
  return r;
}
int posix_fallocate64(int fd, off_t o, off_t len) {
  int r;
  LOCKED(before_extend(fd); r = real_posix_fallocate64(fd, o, len));
  return r;
}
int fallocate(int fd, int mode, off_t o, off_t len) {
  int r;
  LOCKED(before_extend(fd); r = real_fallocate(fd, mode, o, len));
  return r;
}
int fallocate64(int fd, int mode, off_t o, off_t len) {
  int r;
  LOCKED(before_extend(fd); r = real_fallocate64(fd, mode, o, len));
  return r;
}
int fsync(int fd) {
  int r;
  LOCKED(r = real_fsync(fd); if (r == 0) synced(fd));
  return r;
}
int fdatasync(int fd) {
  int r;
  LOCKED(r = real_fdatasync(fd); if (r == 0) synced(fd));
  return r;
}
int close(int fd) {
  if (enabled && fd >= 0 && fd < MAX_FD) {
    LOCKED(table[fd].state = 0);
  }
  return real_close(fd);
}

/** The absolute form of path (relative to dirfd), or "" when it cannot be known. */
static void absolute(int dirfd, const char *path, char *out, size_t size) {
  out[0] = '\0';
  if (path[0] == '/') {
    int n = snprintf(out, size, "%s", path);
    if (n < 0 || (size_t)n >= size) out[0] = '\0';
    return;
  }
  char base[PATH_MAX];
  if (dirfd == AT_FDCWD) {
    if (getcwd(base, sizeof base) == NULL) return;
  } else {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
    ssize_t n = readlink(link, base, sizeof base - 1);
    if (n < 0) return;
    base[n] = '\0';
  }
  int n = snprintf(out, size, "%s/%s", base, path);
  if (n < 0 || (size_t)n >= size) out[0] = '\0';
}

static void forget(int dirfd, const char *path) {
  if (!enabled) return;
  char abs[PATH_MAX], jpath[PATH_MAX + 64];
  absolute(dirfd, path, abs, sizeof abs);
  if (abs[0] == '\0' || !under_root(abs)) return;
  journal_of(abs, jpath, sizeof jpath);
  real_unlink(jpath);
}

static void moved(int olddir, const char *from, int newdir, const char *to) {
  if (!enabled) return;
  char a[PATH_MAX], b[PATH_MAX], ja[PATH_MAX + 64], jb[PATH_MAX + 64];
  absolute(olddir, from, a, sizeof a);
  absolute(newdir, to, b, sizeof b);
  if (b[0] != '\0' && under_root(b)) {
    journal_of(b, jb, sizeof jb);
    real_unlink(jb);
    if (a[0] != '\0' && under_root(a)) {
      journal_of(a, ja, sizeof ja);
      real_rename(ja, jb);
    }
  } else if (a[0] != '\0' && under_root(a)) {
    journal_of(a, ja, sizeof ja);
    real_unlink(ja);
  }
}

int unlink(const char *path) {
  int r;
  LOCKED(r = real_unlink(path); if (r == 0) forget(AT_FDCWD, path));
  return r;
}
int unlinkat(int dirfd, const char *path, int flags) {
  int r;
  LOCKED(r = real_unlinkat(dirfd, path, flags); if (r == 0 && !(flags & AT_REMOVEDIR)) forget(dirfd, path));
  return r;
}
int rename(const char *from, const char *to) {
  int r;
  LOCKED(r = real_rename(from, to); if (r == 0) moved(AT_FDCWD, from, AT_FDCWD, to));
  return r;
}
int renameat(int od, const char *from, int nd, const char *to) {
  int r;
  LOCKED(r = real_renameat(od, from, nd, to); if (r == 0) moved(od, from, nd, to));
  return r;
}
int renameat2(int od, const char *from, int nd, const char *to, unsigned int flags) {
  int r;
  LOCKED(r = real_renameat2(od, from, nd, to, flags); if (r == 0) moved(od, from, nd, to));
  return r;
}
