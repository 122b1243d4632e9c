/* dpcnn: parse the command line, bring up MPI, train. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/dist.h"
#include "dpcnn/error.h"
#include "dpcnn/evaluate.h"
#include "dpcnn/isa.h"
#include "dpcnn/layers.h"
#include "dpcnn/options.h"
#include "dpcnn/runtime.h"
#include "dpcnn/stop.h"
#include "dpcnn/sweep.h"
#include "dpcnn/train.h"
#include "dpcnn/watchdog.h"

#ifdef __SANITIZE_ADDRESS__
/* LeakSanitizer stops the world with ptrace and crashes on Open MPI's helper
 * threads ("Tracer caught signal 11"); MPI programs run with the address and
 * undefined-behaviour checks only. The tests without MPI keep leak checking. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }
#endif

/* Before MPI is up, only the launcher's environment tells which rank this is;
 * usage errors and --help are printed by rank 0 alone and need no MPI at all. */
static int launcher_rank(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                                       "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v);
    }
    return 0;
}

static int launcher_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE",
                                       "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0)
            return atoi(v);
    }
    return 1;
}

/* Started by a launcher (mpirun, srun)? Asked before MPI_Init: a singleton's
 * MPI_Init sets PMIX_RANK in its own environment, so afterwards every run
 * would look launched and a terminal would never get the live line. */
static int launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                       "SLURM_PROCID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    runtime_mark_start();
    /* dpcnn trains; dpcnn evaluate CHECKPOINT evaluates; dpcnn sweep DIR
     * trains an experiment's runs. Training takes a stop signal as a request
     * to checkpoint and stop from the first instant; evaluation has nothing
     * to save and keeps the default. */
    const int evaluating = argc > 1 && strcmp(argv[1], "evaluate") == 0;
    const int sweeping = argc > 1 && strcmp(argv[1], "sweep") == 0;
    if (!evaluating)
        stop_install();
    /* after the handlers: stopping OpenBLAS's threads joins them, which can
     * take long enough for an early SIGTERM to land first */
    runtime_blas_single();
    /* Parse first, so a usage error or --help needs no MPI at all. */
    const int speak = launcher_rank() == 0;
    TrainConfig train;
    EvalConfig eval;
    SweepConfig sweep;
    switch (evaluating ? evaluate_parse(&eval, argc - 1, argv + 1, speak)
            : sweeping ? sweep_parse(&sweep, argc - 1, argv + 1, speak)
                       : options_parse(&train, argc, argv, speak)) {
    case OPTIONS_EXIT_OK: return DPCNN_EXIT_OK;
    case OPTIONS_EXIT_USAGE: return DPCNN_EXIT_USAGE;
    default: break;
    }
    if (sweeping && (sweep.table_only || sweep.list_only))
        return sweep_offline(&sweep); /* needs no MPI */
    if (!evaluating && !sweeping && train.print_model)
        return train_print_model(&train); /* needs no MPI */
    /* The kernels' path: a DPCNN_ISA this CPU cannot run is refused here, on
     * every rank alike, before any work (train_run selects a run's engine). */
    if (isa_select() < 0 || (evaluating && engine_select(eval.kernels ? eval.kernels : "native") < 0)) {
        if (speak)
            fprintf(stderr, "dpcnn: error: %s\n", err_get());
        return DPCNN_EXIT_FAILURE;
    }
    const int by_launcher = launched();
    train.launched = sweep.launched = by_launcher;
    /* The watchdog runs from before MPI_Init to after MPI_Finalize: a rank
     * stopped or lost while the others wait in either would hold them there
     * for ever. Until MPI knows, the launcher says who is speaking. */
    msg_set_rank(launcher_rank(), launcher_size());
    watchdog_start(evaluating ? eval.hang_timeout
                   : sweeping ? sweep.common.hang_timeout
                              : train.hang_timeout);
    watchdog_beat("starting MPI", 0);
    Dist *d = dist_init(&argc, &argv, by_launcher);
    runtime_phase("MPI");
    int status = evaluating ? evaluate_run(&eval, d)
                 : sweeping ? sweep_run(&sweep, d)
                            : train_run(&train, d);
    if (sweeping)
        sweep_free(&sweep);
    watchdog_beat("finishing MPI", 0);
    dist_finalize(d);
    watchdog_stop();
    return status;
}
