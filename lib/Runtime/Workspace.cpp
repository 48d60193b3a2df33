//===- Workspace.cpp - The compiled code's allocator ----------------------===//
//
// Part of Switchyard, an MLIR compiler for Mixture-of-Experts models.
//
//===----------------------------------------------------------------------===//
//
// The compiled code allocates its intermediate buffers (memref.alloc) on
// every run and frees them at the end. Through glibc's malloc, blocks above
// its mmap threshold are mapped and unmapped each time, so every run page-
// faults its buffers in again: the kernel zeroed 17 MB of fresh pages a run
// of the Soft MoE B/16 block (B=8), 12% of its samples, and the run took
// about 120 ms against 85 ms with the memory kept.
//
// The pipeline lowers memref.alloc and memref.dealloc to the two functions
// below (finalize-memref-to-llvm's generic allocation functions), and they
// keep freed blocks of 64 KiB to 256 MiB (in powers of two) for the next
// request of their size, up to 1 GiB in all, without touching malloc's
// settings, which belong to the process that loads the artifact. Larger
// blocks (the packed weights) and anything past the limit go back to malloc.
//
// Built with AddressSanitizer, the functions are plain malloc and free, so
// that a use after free is still reported.
//
//===----------------------------------------------------------------------===//

#include "Workspace.h"

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

// libomp's, when the artifact links it (moec always does; a test harness
// may not).
extern "C" int omp_get_level(void) __attribute__((weak));

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SWITCHYARD_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SWITCHYARD_ASAN 1
#endif

using namespace switchyard::runtime;

#ifndef SWITCHYARD_ASAN
namespace {

/// The block header: the capacity, padded so that the payload keeps the
/// block's 64-byte alignment.
constexpr size_t kHeader = 64;
constexpr size_t kMinCached = size_t(64) << 10;
constexpr size_t kMaxCached = size_t(256) << 20;
constexpr size_t kMaxCachedTotal = size_t(1) << 30;

/// Freed blocks by capacity.
struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void *> blocks;
  size_t bytes = 0;
  /// Set when the artifact is unloaded: blocks freed later are not kept.
  bool closed = false;
};

Cache &cache() {
  // Never destroyed: an artifact's static destructors may run before the
  // last free (a model released by a Python finalizer at exit).
  static Cache *instance = new Cache;
  return *instance;
}

/// When the artifact is unloaded (dlclose, or the process exits), its
/// cached blocks go back to malloc: a process that unloads and reloads
/// models would otherwise lose up to the cache's whole size each time.
__attribute__((destructor)) void releaseCache() {
  Cache &c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  for (auto &[capacity, payload] : c.blocks)
    std::free(static_cast<char *>(payload) - kHeader);
  c.blocks.clear();
  c.bytes = 0;
  c.closed = true;
}

bool cacheable(size_t capacity) {
  return capacity >= kMinCached && capacity <= kMaxCached;
}

/// A request's capacity: the power of two at or above it, when that is a
/// size the cache keeps; otherwise the size rounded up to 64 bytes.
/// Requests of nearby sizes then share blocks: runs at nearby batch sizes,
/// and the row blocks of an expert MLP, whose sizes follow their experts'
/// row counts. With classes an eighth of a power of two apart, the Switch
/// block's tasks (233 to 290 rows an expert at B=4) each took a block of
/// their own, cold in the cache, instead of the one the previous task had
/// just freed: 70.3 against 68.6 ms (executables in turn, 5 rounds; 139.1
/// against 132.7 ms on one thread; top-2 241 against 239 ms). Pages past
/// what a run touches are never faulted in, so the rounding costs address
/// space, not memory.
size_t capacityOf(size_t size) {
  if (size >= kMinCached && size <= kMaxCached) {
    size_t capacity = kMinCached;
    while (capacity < size)
      capacity <<= 1;
    return capacity;
  }
  return (size + 63) / 64 * 64;
}

} // namespace
#endif

namespace {
/// Where callCompiled resumes when an allocation of the call fails.
thread_local std::jmp_buf *failedAllocationTarget = nullptr;
thread_local size_t failedAllocationSize = 0;
/// The OpenMP nesting level of that call.
thread_local int failedAllocationLevel = 0;

/// The thread's OpenMP nesting level, counting regions of one thread (which
/// omp_in_parallel does not): 0 outside any, 1 in a region of the host's or
/// of the compiled code's, and so on.
int openMPLevel() { return omp_get_level ? omp_get_level() : 0; }

/// The compiled code cannot take a null pointer: it would write through it.
/// Outside its parallel regions, the call is abandoned; inside one, even of
/// one thread, jumping out would leave libomp's region open.
[[noreturn]] void allocationFailed(size_t size) {
  if (failedAllocationTarget && openMPLevel() == failedAllocationLevel) {
    failedAllocationSize = size;
    std::longjmp(*failedAllocationTarget, 1);
  }
  std::fprintf(stderr,
               "switchyard: out of memory: the compiled code could not "
               "allocate %zu bytes in a parallel region\n",
               size);
  std::abort();
}
} // namespace

unsigned long long switchyard::runtime::callCompiled(void (*fn)(void **),
                                                     void **args) {
  std::jmp_buf target;
  std::jmp_buf *outer = failedAllocationTarget;
  int outerLevel = failedAllocationLevel;
  // Only LLVM-generated frames lie between here and the allocation: nothing
  // with a destructor is skipped.
  if (setjmp(target)) {
    failedAllocationTarget = outer;
    failedAllocationLevel = outerLevel;
    return failedAllocationSize ? failedAllocationSize : 1;
  }
  failedAllocationTarget = &target;
  failedAllocationLevel = openMPLevel();
  fn(args);
  failedAllocationTarget = outer;
  failedAllocationLevel = outerLevel;
  return 0;
}

static void *allocate(size_t size) {
#ifdef SWITCHYARD_ASAN
  return std::malloc(size);
#else
  // No request that large can be met; rounding it up would overflow.
  if (size > SIZE_MAX / 2)
    return nullptr;
  size_t capacity = capacityOf(size);
  if (cacheable(capacity)) {
    Cache &c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    // The block of that capacity freed last, the likeliest in cache.
    auto [first, last] = c.blocks.equal_range(capacity);
    if (first != last) {
      auto it = std::prev(last);
      void *payload = it->second;
      c.blocks.erase(it);
      c.bytes -= capacity;
      return payload;
    }
  }
  auto *block =
      static_cast<char *>(std::aligned_alloc(kHeader, kHeader + capacity));
  if (!block)
    return nullptr;
  *reinterpret_cast<size_t *>(block) = capacity;
  return block + kHeader;
#endif
}

extern "C" void *_mlir_memref_to_llvm_alloc(size_t size) {
  void *payload = allocate(size);
  if (!payload && size)
    allocationFailed(size);
  return payload;
}

extern "C" void _mlir_memref_to_llvm_free(void *payload) {
#ifdef SWITCHYARD_ASAN
  std::free(payload);
#else
  if (!payload)
    return;
  char *block = static_cast<char *>(payload) - kHeader;
  size_t capacity = *reinterpret_cast<size_t *>(block);
  if (cacheable(capacity)) {
    Cache &c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (!c.closed && c.bytes + capacity <= kMaxCachedTotal) {
      c.blocks.emplace(capacity, payload);
      c.bytes += capacity;
      return;
    }
  }
  std::free(block);
#endif
}

void switchyard::runtime::freeCompiled(void *payload) {
  _mlir_memref_to_llvm_free(payload);
}
