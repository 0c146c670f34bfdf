// Three calls of the C library that Node does not expose, for src/native/native.ts: posix_fadvise, to
// drop a file's clean pages from the page cache or say how it will be read, malloc_trim, to give
// the memory malloc holds free back to the kernel, and flock, to hold a log's folder for one process. Built by node-gyp at `npm ci` (binding.gyp); a
// node without it runs as before, without what these give.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/file.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value number_result(napi_env env, int64_t value) {
  napi_value out;
  napi_create_int64(env, value, &out);
  return out;
}

// A JavaScript number that is an integer from 0 to max, into *out; false for anything else. N-API's
// own conversions coerce: NaN and the infinities become 0 (lockFile(NaN) locked standard input),
// fractions are cut, and int32 keeps the low 32 bits (2 ** 32 + fd named fd).
static bool whole(napi_env env, napi_value value, double max, int64_t* out) {
  double d;
  if (napi_get_value_double(env, value, &d) != napi_ok || !isfinite(d) || d < 0 || d > max || d != floor(d)) return false;
  *out = (int64_t)d;
  return true;
}

// advise(fd, offset, length, advice): posix_fadvise, 0 or its errno. advice: 1 random (no
// readahead), 3 will need, 4 don't need (clean pages in the range leave the page cache; dirty ones
// are left to writeback). Other values are refused.
static napi_value advise(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) {
    napi_throw_type_error(env, NULL, "advise(fd, offset, length, advice)");
    return NULL;
  }
  int64_t fd, offset, length, which;
  // 2^53: the largest integer a number holds exactly, far past any file's offset.
  if (!whole(env, argv[0], INT_MAX, &fd) || !whole(env, argv[1], 9007199254740992.0, &offset) ||
      !whole(env, argv[2], 9007199254740992.0, &length) || !whole(env, argv[3], INT_MAX, &which)) {
    napi_throw_type_error(env, NULL, "advise(fd, offset, length, advice): non-negative integers");
    return NULL;
  }
  int advice;
  switch (which) {
    case 1: advice = POSIX_FADV_RANDOM; break;
    case 3: advice = POSIX_FADV_WILLNEED; break;
    case 4: advice = POSIX_FADV_DONTNEED; break;
    default: napi_throw_range_error(env, NULL, "advise: advice is 1, 3 or 4"); return NULL;
  }
  return number_result(env, posix_fadvise((int)fd, (off_t)offset, (off_t)length, advice));
}

// 1 if malloc gave memory back, 0 if not, -1 where the C library has no malloc_trim.
static int trim(void) {
#ifdef __GLIBC__
  return malloc_trim(0);
#else
  return -1;
#endif
}

// trimMalloc(): trim()'s answer, on the calling thread.
static napi_value trim_malloc(napi_env env, napi_callback_info info) {
  (void)info;
  return number_result(env, trim());
}

// trimMallocAsync(): a Promise of trimMalloc's answer, with malloc_trim run on libuv's thread pool.
// It locks each arena in turn while it trims it: a thread that allocates from that arena meanwhile
// waits, the event loop included, but only for that arena's share.
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int result;
} trim_job;

static void trim_execute(napi_env env, void* data) {
  (void)env;
  ((trim_job*)data)->result = trim();
}

static void trim_complete(napi_env env, napi_status status, void* data) {
  trim_job* job = data;
  napi_value value = number_result(env, status == napi_ok ? job->result : -1);
  napi_resolve_deferred(env, job->deferred, value);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value trim_malloc_async(napi_env env, napi_callback_info info) {
  (void)info;
  trim_job* job = calloc(1, sizeof(trim_job));
  if (job == NULL) {
    napi_throw_error(env, NULL, "trimMallocAsync: out of memory");
    return NULL;
  }
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    free(job);
    napi_throw_error(env, NULL, "trimMallocAsync: no promise");
    return NULL;
  }
  napi_create_string_utf8(env, "mom_trim_malloc", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, trim_execute, trim_complete, job, &job->work) != napi_ok) {
    job->work = NULL;
  } else if (napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_async_work(env, job->work);
    job->work = NULL;
  }
  if (job->work == NULL) {
    // Not queued: nothing will complete it, so it is answered here (no trim).
    napi_resolve_deferred(env, job->deferred, number_result(env, -1));
    free(job);
  }
  return promise;
}

// lockFile(fd): flock(fd, LOCK_EX | LOCK_NB), 0 or its errno (EWOULDBLOCK: another open file of the
// same file holds it, in this process or another, in any pid namespace on this kernel). Held until
// the descriptor is closed, or its process ends however it ends.
static napi_value lock_file(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !whole(env, argv[0], INT_MAX, &fd)) {
    napi_throw_type_error(env, NULL, "lockFile(fd): a file descriptor");
    return NULL;
  }
  int r;
  do r = flock((int)fd, LOCK_EX | LOCK_NB);
  while (r != 0 && errno == EINTR);
  return number_result(env, r == 0 ? 0 : errno);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"advise", NULL, advise, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimMalloc", NULL, trim_malloc, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimMallocAsync", NULL, trim_malloc_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lockFile", NULL, lock_file, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
