/* The CPU emulation of the CUDA runtime (tests/emu/emu.h): device memory
 * is malloc'd host memory, tracked so that copies, memsets, frees and
 * kernel pointer arguments that are not device memory fail as they would
 * on a GPU; work queued on a stream runs when the host waits for it (see
 * "streams and events"). A kernel launch runs its blocks one after
 * another; the threads of a block are fibers scheduled on the OS thread
 * that runs the launch. A fiber runs until it reaches __syncthreads (waits for
 * every thread of the block), a shuffle (waits for the 32 lanes of its
 * warp), or returns. When no fiber can run and some still wait, that is a
 * launch failure with a message saying which barrier and which threads:
 * threads of the block that return while others wait at __syncthreads,
 * a shuffle with a lane missing (exited, or a partial warp), or threads
 * stuck at different barriers. Launch failures are sticky, as on a GPU.
 * So is a stream hazard: two streams touching one allocation, one of them
 * writing, with nothing ordering them (see "stream hazards"). */
#include "emu.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* Every __shared__ variable (emu.h), between the linker's bounds. */
extern "C" char __start_emu_shared[] __attribute__((weak));
extern "C" char __stop_emu_shared[] __attribute__((weak));

/* SPOTRAIN_EMU_ORDER=reverse runs blocks, warps and lanes in descending
 * order: a kernel that depends on the order (a missing __syncthreads, a
 * block reading what another block writes) then computes something else. */
static int emu_reverse = -1;

extern "C" int emu_stream_flush(cudaStream_t s);
extern "C" void emu_stream_gate(cudaStream_t s, int (*open)(void *), void *arg, void (*release)(void *),
                                const void *const *ptrs, const int *writes, int n);

/* Before main: gemm.cuh opens $SPOTRAIN_CUBLASLT first, so the reference
 * cuBLASLt of tests/emu/cublaslt.cpp, never a real one the loader might
 * find; and cuda_available() dlopens libcuda.so.1, which then finds our
 * empty library of that soname already loaded (a search path would not
 * do: under ASan the dlopen comes from the sanitizer's library). */
__attribute__((constructor)) static void emu_libraries(void)
{
    /* SPOTRAIN_EMU_LIBS=search (the DC_EMU=1 rehearsal of
     * tests/device_check.sh): cuBLASLt and NCCL by soname through the
     * loader's search path, as on a GPU machine, so the directories the
     * script found and put on LD_LIBRARY_PATH are the ones that count; a
     * library it did not find is missing here too. */
    const char *libs = getenv("SPOTRAIN_EMU_LIBS");
    int search = libs && !strcmp(libs, "search");
    (void)search;
#ifdef EMU_CUBLASLT
    /* SPOTRAIN_EMU_LIBS=given: $SPOTRAIN_CUBLASLT as the caller set it (a
     * test's stand-in for a broken library). */
    if (!search && !(libs && !strcmp(libs, "given")))
        setenv("SPOTRAIN_CUBLASLT", EMU_CUBLASLT, 1);
#endif
#ifdef EMU_DRIVER
    if (!dlopen(EMU_DRIVER, RTLD_NOW | RTLD_GLOBAL))
        fprintf(stderr, "cuda emulator: %s\n", dlerror());
#endif
#ifdef EMU_NCCL
    /* nccl.cu's dlopen("libnccl.so.2") finds the emulated NCCL
     * (tests/emu/nccl.cpp) the same way, which gets the stream drain. */
    void *nccl = dlopen(search ? "libnccl.so.2" : EMU_NCCL, RTLD_NOW | RTLD_GLOBAL);
    void (*bind)(int (*)(cudaStream_t), int (*)(const void *, size_t),
                 void (*)(cudaStream_t, int (*)(void *), void *, void (*)(void *), const void *const *, const int *,
                          int)) = NULL;
    if (nccl)
        *(void **)&bind = dlsym(nccl, "emu_nccl_bind");
    if (bind)
        bind(emu_stream_flush, emu_is_device, emu_stream_gate);
    else
        fprintf(stderr, "cuda emulator: %s\n", dlerror());
#endif
}

/* ---- errors ---------------------------------------------------------------- */

static thread_local cudaError_t emu_last = cudaSuccess;   /* cudaGetLastError's, per host thread */
static cudaError_t emu_sticky = cudaSuccess;                /* a failed kernel: every later call */

/* The runtime is called from several host threads (the checkpoint writer
 * waits for the snapshot's event): one lock around every call, held while
 * the queued work it waits for runs on the caller's thread. A wait that
 * reaches a closed gate (emu_stream_gate) lets go of it between polls, so
 * the thread that opens the gate can get in. */
static std::recursive_mutex emu_mu;
static thread_local int emu_held;   /* this thread's depth in emu_mu */
struct emu_guard {
    emu_guard()
    {
        emu_mu.lock();
        emu_held++;
    }
    ~emu_guard()
    {
        emu_held--;
        emu_mu.unlock();
    }
};
#define EMU_LOCK() emu_guard emu_lock_

static cudaError_t emu_err(cudaError_t e)
{
    if (e != cudaSuccess && emu_last == cudaSuccess)
        emu_last = e;
    return e;
}

static void emu_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emu_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cuda emulator: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

cudaError_t cudaGetLastError(void)
{
    EMU_LOCK();
    cudaError_t e = emu_sticky != cudaSuccess ? emu_sticky : emu_last;
    emu_last = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return emu_sticky != cudaSuccess ? emu_sticky : emu_last; }

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorHostMemoryAlreadyRegistered: return "part or all of the requested memory range is already mapped";
    case cudaErrorHostMemoryNotRegistered: return "pointer does not correspond to a registered memory region";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

/* Every API call but cudaGetLastError: a failed kernel poisons the context. */
#define EMU_STICKY()                                                                                   \
    do {                                                                                               \
        if (emu_sticky != cudaSuccess)                                                                 \
            return emu_sticky;                                                                         \
    } while (0)

/* ---- device, memory --------------------------------------------------------- */

static const size_t emu_total = (size_t)80 << 30;
static std::map<uintptr_t, size_t> emu_dev, emu_pinned, emu_registered;   /* base -> bytes */
static size_t emu_in_use;

static int emu_inside(const std::map<uintptr_t, size_t> &m, const void *p, size_t bytes)
{
    uintptr_t u = (uintptr_t)p;
    auto it = m.upper_bound(u);
    if (it == m.begin())
        return 0;
    --it;
    return u >= it->first && bytes <= it->second && u - it->first <= it->second - bytes;
}

extern "C" int emu_is_device(const void *p, size_t bytes)
{
    EMU_LOCK();
    return emu_inside(emu_dev, p, bytes);
}

static int emu_pending_bad_arg;

void emu_check_pointer(const void *p, const char *kernel, int arg)
{
    EMU_LOCK();
    uintptr_t u = (uintptr_t)p;
    if (!p || emu_is_device(p, 1) || emu_inside(emu_pinned, p, 1))
        return;
    /* one past the end of an allocation (an empty range) is fine too */
    auto it = emu_dev.lower_bound(u);
    if (it != emu_dev.begin() && (--it, it->first + it->second == u))
        return;
    emu_say("%s: argument %d (%p) is neither device memory nor page-locked host memory", kernel, arg, p);
    emu_pending_bad_arg = 1;
}

static int emu_is_host(const void *p, size_t bytes)
{
    return !emu_inside(emu_dev, p, bytes ? bytes : 1);
}

/* SPOTRAIN_EMU_DRIVER=old: the driver older than the runtime, as a real
 * runtime reports it (the first-run checks of cuda_available). */
cudaError_t cudaGetDeviceCount(int *n)
{
    EMU_LOCK();
    const char *drv = getenv("SPOTRAIN_EMU_DRIVER");
    *n = 0;
    if (drv && !strcmp(drv, "old"))
        return emu_err(cudaErrorInsufficientDriver);
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    EMU_LOCK();
    EMU_STICKY();
    return emu_err(dev == 0 ? cudaSuccess : cudaErrorInvalidDevice);
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    EMU_LOCK();
    if (dev != 0)
        return emu_err(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "spotrain CPU emulator");
    p->totalGlobalMem = emu_total;
    /* SPOTRAIN_EMU_CC=7.5: an older GPU for cuda_available's check. */
    const char *cc = getenv("SPOTRAIN_EMU_CC");
    int ma = 9, mi = 0;
    if (cc && sscanf(cc, "%d.%d", &ma, &mi) != 2)
        ma = 9, mi = 0;
    p->major = ma;
    p->minor = mi;
    p->multiProcessorCount = 1;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    EMU_LOCK();
    *v = CUDART_VERSION;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    EMU_LOCK();
    *v = CUDART_VERSION;
    return cudaSuccess;
}

/* ---- streams and events ------------------------------------------------------
 * Work on a stream is queued and runs only when the host waits for it
 * (stream, event or device synchronize; a free; a blocking copy; a copy
 * to pageable memory), in stream order; a stream waiting on an event
 * first runs the recording stream up to it. So a result the host reads
 * before waiting for it is not there yet, as on a GPU that is slow.
 * SPOTRAIN_EMU_STREAMS=sync runs everything at once instead. The legacy
 * default stream (0) waits for blocking streams and they for it; streams
 * made with cudaStreamNonBlocking do not. */
/* A vector clock (see "stream hazards"): entry i is how many operations
 * of stream i are known to come before. */
typedef std::vector<uint64_t> emu_vc;

struct emu_stream {
    unsigned magic, flags;
    std::deque<std::function<int()>> q;   /* an operation returns 0 while it cannot complete yet (a gate) */
    uint64_t pushed, done;
    int draining;
    int id;              /* its entry in the clocks: 0 the legacy stream, then in creation order */
    emu_vc vc;           /* what its next operation comes after */
};
struct emu_event {
    unsigned magic, flags;
    emu_stream *s;       /* where it was last recorded (NULL: never) */
    uint64_t target;     /* done when s->done reaches it */
    uint64_t gen;
    int timed, pending;  /* pending: queued records of it, which free it once destroyed */
    double t;
    emu_vc vc;           /* the recording stream's clock at the record */
};
enum { EMU_STREAM_MAGIC = 0x5354524du, EMU_EVENT_MAGIC = 0x45564e54u };

static emu_stream emu_legacy = {EMU_STREAM_MAGIC, 0, {}, 0, 0, 0, 0, {}};
static std::vector<emu_stream *> emu_all_streams;   /* created ones */
static int emu_lazy = -1;
static int emu_next_stream_id = 1;

/* ---- stream hazards -----------------------------------------------------------
 * Queued work runs when the host waits, in an order that may hide a stream
 * reading what another stream writes with nothing ordering the two. So
 * happens-before is tracked as the program queues work, independent of
 * when it runs: every stream has a vector clock, ticked by each operation
 * queued on it; an event record copies the stream's clock, a
 * cudaStreamWaitEvent joins it into the waiting stream's; a host wait
 * (stream, event, device synchronize, a blocking copy, a free) joins into
 * the calling host thread's clock, which every operation that thread
 * queues afterwards joins (per thread: the checkpoint writer's wait for
 * the snapshot does not order the training thread's work). The legacy
 * stream and the blocking streams join each other's clocks.
 * Each allocation (device, cudaMallocHost'd, registered) keeps its last
 * writer and the readers since, as (stream, clock, operation); an access
 * from another stream not ordered after a conflicting one is a hazard, a
 * sticky launch failure naming both operations. Granularity: the whole
 * allocation, so two streams touching disjoint parts of one allocation
 * would be reported; host loads and stores are not seen. */
struct emu_acc {
    int stream;        /* -1: none */
    uint64_t t;
    const char *what;
};
struct emu_mem {
    emu_acc w;
    std::vector<emu_acc> r;   /* at most one per stream */
};
static std::map<uintptr_t, emu_mem> emu_mems;   /* by allocation base */
static thread_local emu_vc emu_host_vc;

static void emu_vc_join(emu_vc &a, const emu_vc &b)
{
    if (a.size() < b.size())
        a.resize(b.size(), 0);
    for (size_t i = 0; i < b.size(); i++)
        if (b[i] > a[i])
            a[i] = b[i];
}

static int emu_ordered(const emu_stream *s, const emu_acc &a)
{
    return a.stream < 0 || a.stream == s->id || ((size_t)a.stream < s->vc.size() && s->vc[a.stream] >= a.t);
}

/* The host thread now knows what s has queued (it waited for it). */
static void emu_host_knows(const emu_stream *s) { emu_vc_join(emu_host_vc, s->vc); }

static void emu_host_knows_all(void)
{
    emu_host_knows(&emu_legacy);
    for (size_t i = 0; i < emu_all_streams.size(); i++)
        emu_host_knows(emu_all_streams[i]);
}

/* The next operation on s: after what the host thread has seen, after the
 * implicit order of the legacy stream, one tick later in s. */
static void emu_tick(emu_stream *s)
{
    if (!emu_host_vc.empty())
        emu_vc_join(s->vc, emu_host_vc);
    if (s == &emu_legacy) {
        for (size_t i = 0; i < emu_all_streams.size(); i++)
            if (!(emu_all_streams[i]->flags & cudaStreamNonBlocking))
                emu_vc_join(s->vc, emu_all_streams[i]->vc);
    } else if (!(s->flags & cudaStreamNonBlocking)) {
        emu_vc_join(s->vc, emu_legacy.vc);
    }
    if (s->vc.size() <= (size_t)s->id)
        s->vc.resize((size_t)s->id + 1, 0);
    s->vc[s->id]++;
}

static uintptr_t emu_base_in(const std::map<uintptr_t, size_t> &m, uintptr_t u, size_t *bytes)
{
    auto it = m.upper_bound(u);
    if (it == m.begin())
        return 0;
    --it;
    if (u - it->first >= it->second)
        return 0;
    *bytes = it->second;
    return it->first;
}

static void emu_hazard(const emu_stream *s, const char *what, int write, uintptr_t base, size_t bytes,
                       const emu_acc &prev, int prev_write)
{
    emu_say("stream hazard: %s on stream %d %s the allocation at %p (%zu bytes) that %s on stream %d %s, with "
            "no event or host wait ordering the two (a cudaStreamWaitEvent missing?)", what, s->id,
            write ? "writes" : "reads", (void *)base, bytes, prev.what, prev.stream, prev_write ? "wrote" : "read");
    emu_sticky = cudaErrorLaunchFailure;
    emu_err(cudaErrorLaunchFailure);
}

/* An operation queued on s (ticked) touches the allocation holding p. */
static void emu_touch(const emu_stream *s, const void *p, int write, const char *what)
{
    uintptr_t u = (uintptr_t)p, base = 0;
    size_t bytes = 0;
    if (!p || emu_sticky != cudaSuccess)
        return;
    if (!(base = emu_base_in(emu_dev, u, &bytes)) && !(base = emu_base_in(emu_pinned, u, &bytes)) &&
        !(base = emu_base_in(emu_registered, u, &bytes)))
        return;
    emu_mem &m = emu_mems.emplace(base, emu_mem{{-1, 0, NULL}, {}}).first->second;
    if (!emu_ordered(s, m.w)) {
        emu_hazard(s, what, write, base, bytes, m.w, 1);
        return;
    }
    emu_acc me = {s->id, s->vc[s->id], what};
    if (write) {
        for (size_t i = 0; i < m.r.size(); i++)
            if (!emu_ordered(s, m.r[i])) {
                emu_hazard(s, what, write, base, bytes, m.r[i], 0);
                return;
            }
        /* later accesses ordered after this write are after those reads */
        m.w = me;
        m.r.clear();
        return;
    }
    for (size_t i = 0; i < m.r.size(); i++)
        if (m.r[i].stream == s->id) {
            m.r[i] = me;
            return;
        }
    m.r.push_back(me);
}

static void emu_forget(uintptr_t base) { emu_mems.erase(base); }

static emu_stream *emu_s(cudaStream_t s) { return s ? s : &emu_legacy; }

static cudaError_t emu_stream_ok(cudaStream_t s)
{
    return !s || s->magic == EMU_STREAM_MAGIC ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

static double emu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Runs s's queue until upto operations have run, or up to a closed gate
 * (then s->done < upto: emu_wait polls). */
static void emu_drain(emu_stream *s, uint64_t upto)
{
    if (s->done >= upto)
        return;
    if (s->draining) {
        /* s waits (through events) on work queued after the wait itself */
        emu_say("streams wait on each other in a cycle: a GPU would hang");
        emu_sticky = cudaErrorLaunchFailure;
        return;
    }
    s->draining = 1;
    while (s->done < upto && !s->q.empty()) {
        if (!s->q.front()())
            break;   /* a closed gate: it stays at the head and is asked again */
        s->q.pop_front();
        s->done++;
    }
    s->draining = 0;
}

/* Runs o up to upto from inside another stream's operation: done once o
 * got there (a closed gate on o holds the waiting stream too). */
static int emu_reach(emu_stream *o, uint64_t upto)
{
    emu_drain(o, upto);
    return o->done >= upto || emu_sticky != cudaSuccess;
}

/* Between polls of a closed gate: the lock is let go when this thread
 * holds it once (at an API call's top, no iterator live), so the thread
 * that opens the gate (the emulated NCCL's, MPI's only thread) gets in. */
static void emu_pause(void)
{
    struct timespec ts = {0, 200000};
    int held = emu_held;
    if (held == 1)
        emu_mu.unlock();
    nanosleep(&ts, NULL);
    if (held == 1)
        emu_mu.lock();
}

/* Until s has run upto operations: a host wait. */
static void emu_wait(emu_stream *s, uint64_t upto)
{
    for (;;) {
        emu_drain(s, upto);
        if (s->done >= upto || emu_sticky != cudaSuccess)
            return;
        emu_pause();
    }
}

/* Until every stream has run what was queued before the call (a stream
 * destroyed meanwhile ran its work at the destroy). */
static void emu_drain_all(void)
{
    std::map<int, uint64_t> want;
    want[emu_legacy.id] = emu_legacy.pushed;
    for (size_t i = 0; i < emu_all_streams.size(); i++)
        want[emu_all_streams[i]->id] = emu_all_streams[i]->pushed;
    for (;;) {
        int left = 0;
        emu_drain(&emu_legacy, want[emu_legacy.id]);
        left |= emu_legacy.done < want[emu_legacy.id];
        for (size_t i = 0; i < emu_all_streams.size(); i++) {
            emu_stream *s = emu_all_streams[i];
            auto w = want.find(s->id);
            if (w == want.end())
                continue;
            emu_drain(s, w->second);
            left |= s->done < w->second;
        }
        if (!left || emu_sticky != cudaSuccess)
            return;
        emu_pause();
    }
}

/* always: run op even after a fault (it frees what it owns); otherwise
 * nothing more runs after a fault, as on a GPU. acc: what op touches,
 * checked against the other streams (what names op in a report). */
static void emu_push_op(emu_stream *s, std::function<int()> op, const char *what, const emu_access *acc, int nacc);

static void emu_push(emu_stream *s, std::function<void()> op, int always = 0, const char *what = NULL,
                     const emu_access *acc = NULL, int nacc = 0)
{
    if (!always) {
        std::function<void()> inner = std::move(op);
        op = [inner] {
            if (emu_sticky == cudaSuccess)
                inner();
        };
    }
    emu_push_op(s, [op] { op(); return 1; }, what, acc, nacc);
}

/* Queues op (which may answer 0: not yet) after what s has queued. */
static void emu_push_op(emu_stream *s, std::function<int()> op, const char *what, const emu_access *acc, int nacc)
{
    emu_tick(s);
    for (int i = 0; i < nacc; i++)
        emu_touch(s, acc[i].p, acc[i].write, what);
    if (emu_lazy < 0) {
        const char *m = getenv("SPOTRAIN_EMU_STREAMS");
        emu_lazy = !(m && !strcmp(m, "sync"));
    }
    if (!emu_lazy) {
        while (!op())   /* at once: a gate is waited for here */
            emu_pause();
        return;
    }
    /* the legacy stream and the blocking streams order each other */
    if (s == &emu_legacy) {
        for (size_t i = 0; i < emu_all_streams.size(); i++) {
            emu_stream *o = emu_all_streams[i];
            if (!(o->flags & cudaStreamNonBlocking) && o->pushed > o->done) {
                uint64_t upto = o->pushed;
                s->q.push_back([o, upto] { return emu_reach(o, upto); });
                s->pushed++;
            }
        }
    } else if (!(s->flags & cudaStreamNonBlocking) && emu_legacy.pushed > emu_legacy.done) {
        uint64_t upto = emu_legacy.pushed;
        s->q.push_back([upto] { return emu_reach(&emu_legacy, upto); });
        s->pushed++;
    }
    s->q.push_back(std::move(op));
    s->pushed++;
}

/* For the emulated NCCL (nccl.cpp): runs s's queued work as far as it can
 * (up to a closed gate), as a GPU runs a stream without being waited
 * for; the NCCL group's gate is reached that way. Nonzero after a fault. */
extern "C" int emu_stream_flush(cudaStream_t s)
{
    EMU_LOCK();
    if (emu_stream_ok(s) != cudaSuccess)
        return 1;
    emu_stream *x = emu_s(s);
    if (!x->draining)   /* asked from inside a drain of s: it is being run already */
        emu_drain(x, x->pushed);
    return emu_sticky != cudaSuccess;
}

/* For the emulated NCCL: an operation on s that lets the stream pass only
 * once open(arg) answers 1 (a group's transfers done, or its communicator
 * aborted), as an NCCL kernel holds its stream until it ends. open is asked
 * on whichever thread drains s; release(arg) when the operation is
 * dropped. It accesses ptrs[i] (written when writes[i]) for the hazard
 * checker. After a fault it passes: nothing after it runs anyway. */
extern "C" void emu_stream_gate(cudaStream_t s, int (*open)(void *), void *arg, void (*release)(void *),
                                const void *const *ptrs, const int *writes, int n)
{
    EMU_LOCK();
    std::shared_ptr<void> hold(arg, release);
    std::vector<emu_access> acc;
    for (int i = 0; i < n; i++)
        acc.push_back(emu_access{ptrs[i], writes[i]});
    if (emu_stream_ok(s) != cudaSuccess)
        return;
    emu_push_op(emu_s(s), [open, hold] { return emu_sticky != cudaSuccess || open(hold.get()); },
                "ncclSend/ncclRecv", acc.data(), (int)acc.size());
}

/* For the reference cuBLASLt: a product queued on its stream, touching
 * ptrs[i] (written when writes[i]). */
extern "C" void emu_enqueue(cudaStream_t s, void (*fn)(void *), void *arg, const void *const *ptrs, const int *writes,
                            int n)
{
    EMU_LOCK();
    emu_access acc[8];
    int k = 0;
    for (int i = 0; i < n && k < 8; i++)
        acc[k++] = emu_access{ptrs[i], writes[i]};
    emu_push(emu_s(s), [fn, arg] { fn(arg); }, 1, "cublasLtMatmul", acc, k);
}

cudaError_t cudaDeviceSynchronize(void)
{
    EMU_LOCK();
    EMU_STICKY();
    emu_drain_all();
    emu_host_knows_all();
    return emu_sticky;
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    EMU_LOCK();
    EMU_STICKY();
    *s = new emu_stream{EMU_STREAM_MAGIC, flags, {}, 0, 0, 0, emu_next_stream_id++, {}};
    emu_all_streams.push_back(*s);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    EMU_LOCK();
    if (!s || s->magic != EMU_STREAM_MAGIC)
        return emu_err(cudaErrorInvalidResourceHandle);
    emu_wait(s, s->pushed);   /* queued work still completes */
    for (size_t i = 0; i < emu_all_streams.size(); i++)
        if (emu_all_streams[i] == s)
            emu_all_streams.erase(emu_all_streams.begin() + (long)i);
    s->magic = 0;
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    EMU_LOCK();
    EMU_STICKY();
    if (emu_stream_ok(s) != cudaSuccess)
        return emu_err(cudaErrorInvalidResourceHandle);
    emu_stream *x = emu_s(s);
    emu_wait(x, x->pushed);
    emu_host_knows(x);
    return emu_sticky;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
    EMU_LOCK();
    EMU_STICKY();
    (void)flags;
    if (emu_stream_ok(s) != cudaSuccess || !e || e->magic != EMU_EVENT_MAGIC)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (e->s) {   /* waiting on an event never recorded waits for nothing */
        emu_stream *o = e->s;
        uint64_t upto = e->target;
        emu_push_op(emu_s(s), [o, upto] { return emu_reach(o, upto); }, NULL, NULL, 0);
        emu_vc_join(emu_s(s)->vc, e->vc);
    }
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    EMU_LOCK();
    EMU_STICKY();
    *e = new emu_event{EMU_EVENT_MAGIC, flags, NULL, 0, 0, 0, 0, 0.0, {}};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    EMU_LOCK();
    if (!e || e->magic != EMU_EVENT_MAGIC)
        return emu_err(cudaErrorInvalidResourceHandle);
    /* a queued record of it may still run: then that frees it */
    e->magic = 0;
    if (!e->pending)
        delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    EMU_LOCK();
    EMU_STICKY();
    if (!e || e->magic != EMU_EVENT_MAGIC || emu_stream_ok(s) != cudaSuccess)
        return emu_err(cudaErrorInvalidResourceHandle);
    emu_stream *x = emu_s(s);
    uint64_t gen = ++e->gen;
    e->timed = 0;
    e->pending++;
    emu_push(x, [e, gen] {
        e->pending--;
        if (e->magic != EMU_EVENT_MAGIC) {
            if (!e->pending)
                delete e;
        } else if (e->gen == gen) {
            e->t = emu_now_ms();
            e->timed = 1;
        }
    }, 1);
    e->s = x;
    e->target = x->pushed;
    e->vc = x->vc;
    return cudaSuccess;
}

static int emu_event_done(cudaEvent_t e) { return !e->s || e->s->done >= e->target || !emu_lazy; }

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    EMU_LOCK();
    EMU_STICKY();
    if (!e || e->magic != EMU_EVENT_MAGIC)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (e->s) {
        emu_wait(e->s, e->target);
        emu_vc_join(emu_host_vc, e->vc);
    }
    return emu_sticky;
}

/* A query runs the work up to the event (a GPU that is done by now): a
 * polling loop ends, unless a closed gate (NCCL transfers still under
 * way) comes first: NotReady then, not an error (no last error set). */
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    EMU_LOCK();
    EMU_STICKY();
    if (!e || e->magic != EMU_EVENT_MAGIC)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (e->s) {
        emu_drain(e->s, e->target);
        if (e->s->done < e->target && emu_sticky == cudaSuccess)
            return cudaErrorNotReady;
        emu_vc_join(emu_host_vc, e->vc);
    }
    return emu_sticky;
}

/* As documented: both events recorded and complete, neither created with
 * cudaEventDisableTiming; NotReady while one has not completed. */
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    EMU_LOCK();
    EMU_STICKY();
    if (!a || !b || a->magic != EMU_EVENT_MAGIC || b->magic != EMU_EVENT_MAGIC ||
        ((a->flags | b->flags) & cudaEventDisableTiming) || !a->s || !b->s)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (!emu_event_done(a) || !emu_event_done(b) || !a->timed || !b->timed)
        return emu_err(cudaErrorNotReady);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

/* ---- device, memory (continued) ---------------------------------------------- */

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total)
{
    EMU_LOCK();
    EMU_STICKY();
    *free_bytes = emu_total - emu_in_use;
    *total = emu_total;
    return cudaSuccess;
}

/* The most bytes cudaMalloc'd at once (emu_device_peak, SPOTRAIN_EMU_PEAK). */
static size_t emu_peak;

/* 256-byte aligned like the device allocator; malloc, so ASan sees every
 * byte past the end of an allocation (the rounding up is left unused).
 * Filled with 0xff: NaN in fp32, bf16 and fp16, so a kernel that reads
 * memory nothing wrote (garbage on a GPU) shows up. */
static void *emu_alloc(size_t bytes)
{
    size_t n = (bytes + 255) / 256 * 256;
    void *p = aligned_alloc(256, n ? n : 256);
    if (p)
        memset(p, 0xff, bytes);
    return p;
}

/* SPOTRAIN_EMU_PEAK=file: at exit each process appends "peak BYTES" (the
 * peak of emu_peak's bytes: what the memory plan's per-GPU total predicts,
 * less the context) to file, one line per rank. */

static void emu_say_peak(void)
{
    FILE *f = fopen(getenv("SPOTRAIN_EMU_PEAK"), "a");
    if (!f)
        return;
    fprintf(f, "peak %zu\n", emu_peak);
    fclose(f);
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    EMU_LOCK();
    EMU_STICKY();
    *p = NULL;
    if (bytes > emu_total - emu_in_use)
        return emu_err(cudaErrorMemoryAllocation);
    void *q = emu_alloc(bytes);
    if (!q)
        return emu_err(cudaErrorMemoryAllocation);
    emu_dev[(uintptr_t)q] = bytes;
    emu_in_use += bytes;
    if (emu_in_use > emu_peak)
        emu_peak = emu_in_use;
    static int said;
    if (!said && getenv("SPOTRAIN_EMU_PEAK") && *getenv("SPOTRAIN_EMU_PEAK")) {
        said = 1;
        atexit(emu_say_peak);
    }
    *p = q;
    return cudaSuccess;
}

extern "C" size_t emu_device_peak(int reset)
{
    EMU_LOCK();
    size_t p = emu_peak;
    if (reset)
        emu_peak = emu_in_use;
    return p;
}

/* After a failed kernel the frees still free (the context's memory goes
 * with it on a GPU) and report the error. */
cudaError_t cudaFree(void *p)
{
    EMU_LOCK();
    if (!p)
        return emu_sticky;
    emu_drain_all();   /* cudaFree waits for the device */
    emu_host_knows_all();
    auto it = emu_dev.find((uintptr_t)p);
    if (it == emu_dev.end()) {
        emu_say("cudaFree of %p, which is not a device allocation", p);
        return emu_err(cudaErrorInvalidValue);
    }
    emu_in_use -= it->second;
    emu_dev.erase(it);
    emu_forget((uintptr_t)p);
    free(p);
    return emu_sticky;
}

cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    EMU_LOCK();
    EMU_STICKY();
    *p = emu_alloc(bytes);
    if (!*p)
        return emu_err(cudaErrorMemoryAllocation);
    emu_pinned[(uintptr_t)*p] = bytes;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    EMU_LOCK();
    if (!p)
        return emu_sticky;
    emu_drain_all();
    emu_host_knows_all();
    auto it = emu_pinned.find((uintptr_t)p);
    if (it == emu_pinned.end()) {
        emu_say("cudaFreeHost of %p, which cudaMallocHost did not return", p);
        return emu_err(cudaErrorInvalidValue);
    }
    emu_pinned.erase(it);
    emu_forget((uintptr_t)p);
    free(p);
    return emu_sticky;
}

cudaError_t cudaHostRegister(void *p, size_t bytes, unsigned flags)
{
    EMU_LOCK();
    EMU_STICKY();
    (void)flags;
    if (!p || !bytes || !emu_is_host(p, bytes))
        return emu_err(cudaErrorInvalidValue);
    if (emu_registered.count((uintptr_t)p))
        return emu_err(cudaErrorHostMemoryAlreadyRegistered);
    emu_registered[(uintptr_t)p] = bytes;
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    EMU_LOCK();
    EMU_STICKY();
    emu_drain_all();
    emu_host_knows_all();
    if (!emu_registered.erase((uintptr_t)p))
        return emu_err(cudaErrorHostMemoryNotRegistered);
    emu_forget((uintptr_t)p);
    return cudaSuccess;
}

/* The direction must match where the pointers live (the emulator knows
 * every device allocation): a host pointer handed over as device memory,
 * or a range running past its allocation, fails as on a GPU. */
static cudaError_t emu_copy_check(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, const char *what)
{
    int dst_dev = emu_is_device(dst, bytes), src_dev = emu_is_device(src, bytes);
    int ok;
    switch (kind) {
    case cudaMemcpyHostToDevice: ok = dst_dev && emu_is_host(src, bytes); break;
    case cudaMemcpyDeviceToHost: ok = src_dev && emu_is_host(dst, bytes); break;
    case cudaMemcpyDeviceToDevice: ok = dst_dev && src_dev; break;
    case cudaMemcpyHostToHost: ok = emu_is_host(dst, bytes) && emu_is_host(src, bytes); break;
    case cudaMemcpyDefault: ok = (dst_dev || emu_is_host(dst, bytes)) && (src_dev || emu_is_host(src, bytes)); break;
    default: ok = 0;
    }
    if (!ok) {
        emu_say("%s of %zu bytes %p -> %p (kind %d): a pointer is not where the kind says, or the range runs past "
                "its device allocation", what, bytes, src, dst, (int)kind);
        return emu_err(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}


static int emu_is_pinned(const void *p, size_t bytes)
{
    return emu_inside(emu_pinned, p, bytes ? bytes : 1) || emu_inside(emu_registered, p, bytes ? bytes : 1);
}

/* Queues a checked copy on x. Pageable host memory behaves as the
 * documentation says: a source is read at the call (staged), a
 * destination is written before the call returns. */
static cudaError_t emu_copy(emu_stream *x, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            const char *what)
{
    int dst_dev = emu_is_device(dst, bytes), src_dev = emu_is_device(src, bytes);
    emu_access acc[2] = {{src, 0}, {dst, 1}};
    if (!src_dev && !emu_is_pinned(src, bytes)) {
        std::shared_ptr<std::vector<char>> staged(new std::vector<char>((const char *)src, (const char *)src + bytes));
        emu_push(x, [dst, staged] { memcpy(dst, staged->data(), staged->size()); }, 0, what, acc, 2);
    } else {
        emu_push(x, [dst, src, bytes] { memmove(dst, src, bytes); }, 0, what, acc, 2);
    }
    if (!dst_dev && !emu_is_pinned(dst, bytes)) {
        emu_wait(x, x->pushed);
        emu_host_knows(x);
    }
    (void)kind;
    return emu_sticky;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    EMU_LOCK();
    EMU_STICKY();
    if (bytes == 0)
        return cudaSuccess;
    cudaError_t e = emu_copy_check(dst, src, bytes, kind, "cudaMemcpy");
    if (e != cudaSuccess)
        return e;
    emu_copy(&emu_legacy, dst, src, bytes, kind, "cudaMemcpy");
    emu_wait(&emu_legacy, emu_legacy.pushed);   /* synchronous */
    emu_host_knows(&emu_legacy);
    return emu_sticky;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s)
{
    EMU_LOCK();
    EMU_STICKY();
    if (emu_stream_ok(s) != cudaSuccess)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (bytes == 0)
        return cudaSuccess;
    cudaError_t e = emu_copy_check(dst, src, bytes, kind, "cudaMemcpyAsync");
    if (e != cudaSuccess)
        return e;
    return emu_copy(emu_s(s), dst, src, bytes, kind, "cudaMemcpyAsync");
}

/* Device memory: asynchronous to the host, in the stream's order. */
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
    EMU_LOCK();
    EMU_STICKY();
    if (emu_stream_ok(s) != cudaSuccess)
        return emu_err(cudaErrorInvalidResourceHandle);
    if (bytes == 0)
        return cudaSuccess;
    if (!emu_is_device(p, bytes)) {
        emu_say("cudaMemset of %zu bytes at %p: not inside one device allocation", bytes, p);
        return emu_err(cudaErrorInvalidValue);
    }
    emu_access acc[1] = {{p, 1}};
    emu_push(emu_s(s), [p, value, bytes] { memset(p, value, bytes); }, 0, "cudaMemsetAsync", acc, 1);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int value, size_t bytes) { return cudaMemsetAsync(p, value, bytes, 0); }

/* ---- kernels: blocks in turn, threads as fibers ------------------------------ */

enum { EMU_RUN, EMU_SYNC, EMU_SHFL, EMU_DONE };

/* Kernels here use a few hundred bytes of stack; ASan's redzones take
 * more. A guard page below each stack. */
#ifdef EMU_ASAN
enum { EMU_STACK = 256 << 10 };
#else
enum { EMU_STACK = 64 << 10 };
#endif
enum { EMU_MAX_THREADS = 1024 };

/* Switching fibers: on x86-64 a few instructions that save the
 * callee-saved registers and the stack pointer (swapcontext also saves
 * the signal mask, a system call per switch: several times slower);
 * elsewhere ucontext. emu_swap(from, to): stores the running stack
 * pointer in *from and continues at to. */
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_FAST_SWITCH 1
extern "C" void emu_swap(void **from, void *to);
__asm__(".text\n"
        ".globl emu_swap\n"
        ".type emu_swap, @function\n"
        "emu_swap:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size emu_swap, .-emu_swap\n");
#endif

struct emu_thread {
#ifdef EMU_FAST_SWITCH
    void *sp;
#else
    ucontext_t ctx;
#endif
    uint3 tid;
    int state;
    unsigned nshfl;      /* shuffles done: which of the two slot sets */
    int src;             /* shuffle: the lane read */
    size_t size;
    unsigned mask;
};

struct emu_block {
#ifdef EMU_FAST_SWITCH
    void *sched;
#else
    ucontext_t sched;
#endif
    emu_thread *t;
    unsigned n;
    uint64_t slot[2][EMU_MAX_THREADS];   /* shuffle deposits by (generation, thread) */
    void (*body)(void *);
    void *arg;
    const char *kernel;
    int failed;          /* emu_fail_launch: the block ends, then the launch fails */
    emu_thread *cur;
    char *stacks;
    size_t stride;
#ifdef EMU_ASAN
    const void *sched_bottom;
    size_t sched_size;
#endif
};

static emu_block emu_b;

static void emu_to_sched(int exiting)
{
    emu_thread *me = emu_b.cur;
#ifdef EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(exiting ? NULL : &fake, emu_b.sched_bottom, emu_b.sched_size);
#endif
    (void)exiting;
#ifdef EMU_FAST_SWITCH
    emu_swap(&me->sp, emu_b.sched);
#else
    swapcontext(&me->ctx, &emu_b.sched);
#endif
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

static void emu_fiber(void)
{
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &emu_b.sched_bottom, &emu_b.sched_size);
#endif
    emu_b.body(emu_b.arg);
    emu_b.cur->state = EMU_DONE;
    emu_to_sched(1);
    abort();   /* a finished fiber is never resumed */
}

void __syncthreads(void)
{
    emu_b.cur->state = EMU_SYNC;
    emu_to_sched(0);
}

uint64_t emu_shfl(unsigned mask, uint64_t v, size_t size, int src_lane)
{
    emu_thread *me = emu_b.cur;
    unsigned i = (unsigned)(me - emu_b.t);
    emu_b.slot[me->nshfl & 1][i] = v;
    me->state = EMU_SHFL;
    me->mask = mask;
    me->src = src_lane;
    me->size = size;
    emu_to_sched(0);
    unsigned partner = i / 32 * 32 + (unsigned)src_lane;
    return emu_b.slot[me->nshfl++ & 1][partner];
}

void emu_fail_launch(const char *fmt, ...)
{
    if (emu_b.failed)
        return;   /* the first message is the one that matters */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda emulator: %s: block (%u,%u,%u) thread %u: ", emu_b.kernel ? emu_b.kernel : "?", blockIdx.x,
            blockIdx.y, blockIdx.z, threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    emu_b.failed = 1;
}

void emu_warp_op(const char *op, uint64_t key)
{
    uint64_t first = emu_shfl(0xffffffffu, key, 8, 0);
    if (first != key)
        emu_fail_launch("%s with arguments that differ from lane 0's (a warp-collective call must be the same in "
                        "every lane)", op);
}

static const char *emu_state_name(int s)
{
    return s == EMU_RUN ? "running" : s == EMU_SYNC ? "__syncthreads" : s == EMU_SHFL ? "a shuffle" : "returned";
}

/* 1 when the 32 lanes of warp w all wait at the same full-warp shuffle
 * (emu_release reports the other cases). */
static int emu_warp_ready(unsigned w)
{
    unsigned lo = w * 32;
    if (lo + 32 > emu_b.n)
        return 0;
    const emu_thread *t0 = &emu_b.t[lo];
    for (unsigned i = lo; i < lo + 32; i++) {
        const emu_thread *t = &emu_b.t[i];
        if (t->state != EMU_SHFL || t->mask != 0xffffffffu || t->nshfl != t0->nshfl || t->size != t0->size ||
            t->src < 0 || t->src >= 32)
            return 0;
    }
    return 1;
}

/* After every fiber has stopped: release a warp whose 32 lanes all wait at
 * a shuffle, or the block when all its threads wait at __syncthreads.
 * 1: something released; 0: all done; -1: stuck (message printed). */
static int emu_release(const char *kernel)
{
    unsigned n = emu_b.n, done = 0, sync = 0;
    int released = 0;
    for (unsigned i = 0; i < n; i++) {
        done += emu_b.t[i].state == EMU_DONE;
        sync += emu_b.t[i].state == EMU_SYNC;
    }
    if (done == n)
        return 0;
    for (unsigned w = 0; w < (n + 31) / 32; w++) {
        unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0;
        for (unsigned i = lo; i < hi; i++)
            waiting += emu_b.t[i].state == EMU_SHFL;
        if (!waiting)
            continue;
        if (hi - lo < 32) {
            emu_say("%s: block (%u,%u,%u): warp %u has %u lanes (blockDim.x %u not a multiple of 32) and shuffles "
                    "with mask 0x%08x", kernel, blockIdx.x, blockIdx.y, blockIdx.z, w, hi - lo, blockDim.x,
                    emu_b.t[lo].mask);
            return -1;
        }
        if (waiting < 32)
            continue;
        for (unsigned i = lo; i < hi; i++) {
            emu_thread *t = &emu_b.t[i];
            if (t->mask != 0xffffffffu || t->nshfl != emu_b.t[lo].nshfl || t->size != emu_b.t[lo].size ||
                t->src < 0 || t->src >= 32) {
                emu_say("%s: block (%u,%u,%u) warp %u: lane %u shuffles with mask 0x%08x, source lane %d, %zu bytes "
                        "(lane 0: mask 0x%08x, %zu bytes): the emulator supports full-warp shuffles only",
                        kernel, blockIdx.x, blockIdx.y, blockIdx.z, w, i - lo, t->mask, t->src, t->size,
                        emu_b.t[lo].mask, emu_b.t[lo].size);
                return -1;
            }
        }
        for (unsigned i = lo; i < hi; i++)
            emu_b.t[i].state = EMU_RUN;
        released = 1;
    }
    if (released)
        return 1;
    if (sync == n - done && done > 0) {
        emu_say("%s: block (%u,%u,%u): %u threads wait at __syncthreads while %u returned (undefined on a GPU: a "
                "barrier in divergent code)", kernel, blockIdx.x, blockIdx.y, blockIdx.z, sync, done);
        return -1;
    }
    if (sync == n) {
        for (unsigned i = 0; i < n; i++)
            emu_b.t[i].state = EMU_RUN;
        return 1;
    }
    /* stuck: name the first thread at each kind of wait */
    emu_say("%s: block (%u,%u,%u) deadlocked: %u of %u threads returned, %u wait at __syncthreads, the rest at "
            "shuffles whose warp does not arrive", kernel, blockIdx.x, blockIdx.y, blockIdx.z, done, n, sync);
    for (unsigned i = 0, shown = 0; i < n && shown < 8; i++)
        if (i == 0 || emu_b.t[i].state != emu_b.t[i - 1].state) {
            emu_say("  thread (%u,%u,%u): %s", emu_b.t[i].tid.x, emu_b.t[i].tid.y, emu_b.t[i].tid.z,
                    emu_state_name(emu_b.t[i].state));
            shown++;
        }
    return -1;
}

static int emu_stacks(unsigned n)
{
    static char *base;
    static unsigned have;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    emu_b.stride = EMU_STACK + page;
    if (n <= have) {
        emu_b.stacks = base;
        return 0;
    }
    if (base)
        munmap(base, emu_b.stride * have);
    base = (char *)mmap(NULL, emu_b.stride * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                        -1, 0);
    if (base == MAP_FAILED) {
        base = NULL;
        have = 0;
        return -1;
    }
    for (unsigned i = 0; i < n; i++)
        mprotect(base + emu_b.stride * i, page, PROT_NONE);   /* the guard below stack i */
    have = n;
    emu_b.stacks = base;
    return 0;
}

/* Runs one block (blockIdx set) to its end: 0, or -1 after a message. */
static int emu_run_block(unsigned n, dim3 b, const char *kernel)
{
    emu_thread *threads = emu_b.t;
    char *sh0 = __start_emu_shared, *sh1 = __stop_emu_shared;
    if (sh0 && sh1 > sh0)
        memset(sh0, 0xff, (size_t)(sh1 - sh0));
    for (unsigned i = 0; i < n; i++) {
        emu_thread *t = &threads[i];
        memset(t, 0, sizeof *t);
        t->tid = uint3{i % b.x, i / b.x % b.y, i / (b.x * b.y)};
        t->state = EMU_RUN;
        char *lo = emu_b.stacks + emu_b.stride * i + emu_b.stride - EMU_STACK;
#ifdef EMU_FAST_SWITCH
        /* what emu_swap pops: six registers, then emu_fiber as the return
         * address, entered as if called */
        void **top = (void **)(lo + EMU_STACK);
        top[-1] = NULL;
        top[-2] = (void *)emu_fiber;
        for (int r = 3; r <= 8; r++)
            top[-r] = NULL;
        t->sp = top - 8;
#else
        getcontext(&t->ctx);
        t->ctx.uc_stack.ss_sp = lo;
        t->ctx.uc_stack.ss_size = EMU_STACK;
        t->ctx.uc_link = NULL;
        makecontext(&t->ctx, emu_fiber, 0);
#endif
    }
    for (;;) {
        /* a warp at a time, its shuffles released at once: the fibers that
         * run together stay in the cache */
        unsigned nw = (n + 31) / 32;
        for (unsigned wi = 0; wi < nw; wi++) {
            unsigned lo = (emu_reverse ? nw - 1 - wi : wi) * 32, hi = lo + 32 < n ? lo + 32 : n;
            for (;;) {
                for (unsigned li = lo; li < hi; li++) {
                    unsigned i = emu_reverse ? hi - 1 - (li - lo) : li;
                    emu_thread *t = &threads[i];
                    if (t->state != EMU_RUN)
                        continue;
                    emu_b.cur = t;
                    threadIdx = t->tid;
#ifdef EMU_ASAN
                    void *fake = NULL;
                    __sanitizer_start_switch_fiber(&fake, emu_b.stacks + emu_b.stride * i + emu_b.stride - EMU_STACK,
                                                   EMU_STACK);
#endif
#ifdef EMU_FAST_SWITCH
                    emu_swap(&emu_b.sched, t->sp);
#else
                    swapcontext(&emu_b.sched, &t->ctx);
#endif
#ifdef EMU_ASAN
                    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
                }
                if (!emu_warp_ready(lo / 32))
                    break;
                for (unsigned i = lo; i < hi; i++)
                    threads[i].state = EMU_RUN;
            }
        }
        int r = emu_release(kernel);
        if (r == 0)
            return emu_b.failed ? -1 : 0;
        if (r < 0) {
            /* the stuck fibers are abandoned: their stacks are reused */
#ifdef EMU_ASAN
            ASAN_UNPOISON_MEMORY_REGION(emu_b.stacks, emu_b.stride * n);
#endif
            return -1;
        }
    }
}

/* ---- dynamic shared memory --------------------------------------------- */

/* The largest dynamic shared memory a block may opt in to on the emulated
 * device (SPOTRAIN_EMU_CC, as cudaGetDeviceProperties says it). */
static int emu_optin_bytes(void)
{
    const char *cc = getenv("SPOTRAIN_EMU_CC");
    int ma = 9, mi = 0;
    if (cc && sscanf(cc, "%d.%d", &ma, &mi) != 2)
        ma = 9, mi = 0;
    if (ma >= 9)
        return 227 * 1024;
    if (ma == 8)
        return mi == 0 || mi == 7 ? 163 * 1024 : 99 * 1024;
    return 48 * 1024;
}

enum { EMU_MAX_FUNCS = 256, EMU_DYN_DEFAULT = 48 * 1024 };
static struct {
    const void *func;
    int max_dyn;
} emu_funcs[EMU_MAX_FUNCS];
static int emu_nfuncs;

cudaError_t emu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value)
{
    EMU_LOCK();
    if (!func)
        return emu_err(cudaErrorInvalidValue);
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout)
        return value >= -1 && value <= 100 ? cudaSuccess : emu_err(cudaErrorInvalidValue);
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
        return emu_err(cudaErrorInvalidValue);
    if (value < 0 || value > emu_optin_bytes()) {
        emu_say("cudaFuncSetAttribute: %d bytes of dynamic shared memory is over this device's opt-in maximum %d",
                value, emu_optin_bytes());
        return emu_err(cudaErrorInvalidValue);
    }
    int i = 0;
    while (i < emu_nfuncs && emu_funcs[i].func != func)
        i++;
    if (i == EMU_MAX_FUNCS)
        return emu_err(cudaErrorMemoryAllocation);
    emu_funcs[i].func = func;
    emu_funcs[i].max_dyn = value;
    emu_nfuncs += i == emu_nfuncs;
    return cudaSuccess;
}

/* The kernel's dynamic shared memory limit: 48 KiB unless raised. */
static size_t emu_dyn_max(const void *func)
{
    for (int i = 0; i < emu_nfuncs; i++)
        if (emu_funcs[i].func == func)
            return (size_t)emu_funcs[i].max_dyn > (size_t)EMU_DYN_DEFAULT ? (size_t)emu_funcs[i].max_dyn
                                                                           : (size_t)EMU_DYN_DEFAULT;
    return EMU_DYN_DEFAULT;
}

/* The running launch's dynamic shared memory: exactly its bytes (ASan
 * sees an access past them), poisoned before every block. */
static unsigned char *emu_dyn;
static size_t emu_dyn_bytes;

void *emu_dyn_smem(void) { return emu_dyn; }

/* Runs a launch (checked by emu_run) on the host now: blocks in turn. */
static void emu_exec(dim3 g, dim3 b, size_t shmem, void (*body)(void *), void *arg, const char *kernel)
{
    static emu_thread threads[EMU_MAX_THREADS];
    unsigned n = b.x * b.y * b.z;
    if (emu_stacks(n)) {
        emu_say("%s: no memory for %u fiber stacks", kernel, n);
        emu_sticky = cudaErrorMemoryAllocation;
        return;
    }
    void *dyn = NULL;
    if (shmem && posix_memalign(&dyn, 16, shmem)) {
        emu_say("%s: no memory for %zu bytes of dynamic shared memory", kernel, shmem);
        emu_sticky = cudaErrorMemoryAllocation;
        return;
    }
    emu_dyn = (unsigned char *)dyn;
    emu_dyn_bytes = shmem;
    emu_b.t = threads;
    emu_b.n = n;
    emu_b.body = body;
    emu_b.arg = arg;
    emu_b.kernel = kernel;
    emu_b.failed = 0;
    gridDim = g;
    blockDim = b;
    if (emu_reverse < 0) {
        const char *o = getenv("SPOTRAIN_EMU_ORDER");
        emu_reverse = o && !strcmp(o, "reverse");
    }
    unsigned long long nb = (unsigned long long)g.x * g.y * g.z;
    for (unsigned long long k = 0; k < nb; k++) {
        unsigned long long bi = emu_reverse ? nb - 1 - k : k;
        blockIdx = uint3{(unsigned)(bi % g.x), (unsigned)(bi / g.x % g.y), (unsigned)(bi / g.x / g.y)};
        if (emu_dyn)
            memset(emu_dyn, 0xff, emu_dyn_bytes);
        if (emu_run_block(n, b, kernel)) {
            emu_sticky = cudaErrorLaunchFailure;
            break;
        }
    }
    free(emu_dyn);
    emu_dyn = NULL;
    emu_dyn_bytes = 0;
}

void emu_run(const emu_cfg *c, const void *func, void (*body)(void *), void *arg, void (*release)(void *),
             const char *kernel, const emu_access *acc, int nacc)
{
    EMU_LOCK();
    if (emu_sticky != cudaSuccess) {
        release(arg);
        return;
    }
    if (emu_pending_bad_arg) {   /* a GPU would fault at the first access */
        emu_pending_bad_arg = 0;
        emu_sticky = cudaErrorLaunchFailure;
        emu_err(cudaErrorLaunchFailure);
        release(arg);
        return;
    }
    dim3 g = c->grid, b = c->block;
    unsigned long long nt = (unsigned long long)b.x * b.y * b.z;
    if (emu_stream_ok(c->stream) != cudaSuccess) {
        emu_say("%s: launched on an invalid stream", kernel);
        emu_err(cudaErrorInvalidResourceHandle);
        release(arg);
        return;
    }
    /* the limits of every GPU since sm_30; dynamic shared memory over 48
     * KiB only up to what cudaFuncSetAttribute allowed the kernel */
    size_t dyn_max = emu_dyn_max(func), shmem = c->shmem;
    if (!g.x || !g.y || !g.z || !nt || nt > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x > 2147483647u ||
        g.y > 65535 || g.z > 65535 || shmem > dyn_max) {
        emu_say("%s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u) dynamic shared %zu%s", kernel,
                g.x, g.y, g.z, b.x, b.y, b.z, shmem,
                shmem > dyn_max ? dyn_max > EMU_DYN_DEFAULT ? " (over the kernel's cudaFuncSetAttribute limit)"
                                                             : " (over 48 KiB needs cudaFuncSetAttribute("
                                                               "cudaFuncAttributeMaxDynamicSharedMemorySize) first)"
                                : "");
        emu_err(cudaErrorInvalidConfiguration);
        release(arg);
        return;
    }
    emu_push(emu_s(c->stream), [g, b, shmem, body, arg, release, kernel] {
        if (emu_sticky == cudaSuccess)
            emu_exec(g, b, shmem, body, arg, kernel);
        release(arg);
    }, 1, kernel, acc, nacc);
}
