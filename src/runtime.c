#include "config.h"

#include <cblas.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/error.h"
#include "dpcnn/hash.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"
#include "dpcnn/runtime.h"

int runtime_threads(int asked, Dist *d, int max_useful)
{
    int t = asked;
    if (t <= 0) {
        cpu_set_t set;
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : (int)online;
        t = mine >= online ? (int)(online / dist_local_size(d)) : mine;
    }
#ifndef _OPENMP
    t = 1;
#endif
    if (t > max_useful)
        t = max_useful;
    return t < 1 ? 1 : t;
}

/* OpenBLAS's pthreads build starts its worker threads as it loads, and an
 * idle worker spins (sched_yield) for about 0.1 s before it sleeps: on a
 * 2-core machine with 2 ranks, a tenth of a second of the other rank's core
 * at every start. dpcnn's BLAS calls run on one thread per rank, so the
 * workers are stopped at once where the library offers it: with
 * blas_thread_shutdown_, what OpenBLAS itself calls before a fork (it starts
 * them again if a call ever needs them). A weak reference: other builds of
 * the library lack it, and then nothing happens. */
extern void blas_thread_shutdown_(void) __attribute__((weak));

void runtime_blas_single(void)
{
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(1);
#endif
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
}

static const char *blas_core(void)
{
#ifdef HAVE_OPENBLAS_GET_CORENAME
    return openblas_get_corename();
#else
    return "unknown";
#endif
}

/* Debian's OpenBLAS 0.3.21 does not know some recent CPUs and falls back to
 * its generic SSE3 kernel, about 4x slower than the AVX-512 one. */
void runtime_report_kernels(Dist *d, int threads)
{
    if (engine_current() == &engine_native) {
        /* every path gives the same bits (isa.h): nothing for the ranks to agree on */
        msg_info("kernels: dpcnn's own, %s path (DPCNN_ISA=avx512|avx2|generic forces one; the "
                 "same bits on each), %d worker thread%s per rank",
                 isa_name(isa_current()), threads, threads == 1 ? "" : "s");
        return;
    }
    const char *core = blas_core();
    msg_info("kernels: OpenBLAS, its %s kernel (single-threaded inside each of %d worker "
             "thread%s per rank; the bits depend on the kernel)",
             core, threads, threads == 1 ? "" : "s");
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington",
                                          "Nehalem", "Atom", "Katmai", "Coppermine"};
    int is_generic = 0;
    for (size_t i = 0; i < sizeof generic / sizeof generic[0]; i++)
        is_generic |= strcmp(core, generic[i]) == 0;
    __builtin_cpu_init();
    if (dist_rank(d) == 0 && is_generic && __builtin_cpu_supports("avx512f"))
        msg_warn("this CPU has AVX-512 but OpenBLAS chose its generic %s kernel; matrix "
                 "products run about 4x faster with OPENBLAS_CORETYPE=SkylakeX in the "
                 "environment (under mpirun on several nodes add -x OPENBLAS_CORETYPE)",
                 core);
    else if (dist_rank(d) == 0 && is_generic && __builtin_cpu_supports("avx2"))
        msg_warn("this CPU has AVX2 but OpenBLAS chose its generic %s kernel; set "
                 "OPENBLAS_CORETYPE=Haswell for faster matrix products",
                 core);
    /* Different kernels round differently: ranks would then disagree. */
    const uint64_t h = fnv1a64(FNV1A64_INIT, core, strlen(core));
    uint64_t *all = XCALLOC(uint64_t, (size_t)dist_size(d));
    dist_allgather_u64(d, h, all);
    for (int r = 1; r < dist_size(d); r++)
        if (all[r] != all[0]) {
            if (dist_rank(d) == 0)
                msg_warn("ranks run different OpenBLAS kernels (rank %d differs from rank 0): "
                         "results will not be bitwise reproducible; set OPENBLAS_CORETYPE "
                         "the same everywhere",
                         r);
            break;
        }
    free(all);
}

/* ---- start-up phases ---- */

enum { MAX_PHASES = 8 };
static struct {
    double start, last;
    int n;
    const char *name[MAX_PHASES];
    double seconds[MAX_PHASES];
} g_phases;

void runtime_mark_start(void)
{
    g_phases.start = g_phases.last = dist_wtime();
    g_phases.n = 0;
}

void runtime_phase(const char *name)
{
    const double t = dist_wtime();
    if (g_phases.n < MAX_PHASES) {
        g_phases.name[g_phases.n] = name;
        g_phases.seconds[g_phases.n++] = t - g_phases.last;
    }
    g_phases.last = t;
}

void runtime_startup_text(char *buf, size_t n)
{
    size_t at = (size_t)snprintf(buf, n, "%.3f s:", g_phases.last - g_phases.start);
    for (int i = 0; i < g_phases.n && at < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s %s %.3f", i ? "," : "", g_phases.name[i],
                               g_phases.seconds[i]);
}
