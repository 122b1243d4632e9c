/* dpcnn: parse the command line, bring up MPI, train. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "dpcnn/dist.h"
#include "dpcnn/error.h"
#include "dpcnn/evaluate.h"
#include "dpcnn/options.h"
#include "dpcnn/train.h"

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

int main(int argc, char **argv)
{
    /* dpcnn trains; dpcnn evaluate CHECKPOINT evaluates. Parse first, so a
     * usage error or --help needs no MPI at all. */
    const int evaluating = argc > 1 && strcmp(argv[1], "evaluate") == 0;
    const int speak = launcher_rank() == 0;
    TrainConfig train;
    EvalConfig eval;
    switch (evaluating ? evaluate_parse(&eval, argc - 1, argv + 1, speak)
                       : options_parse(&train, argc, argv, speak)) {
    case OPTIONS_EXIT_OK: return DPCNN_EXIT_OK;
    case OPTIONS_EXIT_USAGE: return DPCNN_EXIT_USAGE;
    default: break;
    }
    if (!evaluating) /* before MPI_Init, which takes long enough to be signalled in */
        train_catch_stop_signals();
    Dist *d = dist_init(&argc, &argv);
    int status = evaluating ? evaluate_run(&eval, d) : train_run(&train, d);
    dist_finalize(d);
    return status;
}
