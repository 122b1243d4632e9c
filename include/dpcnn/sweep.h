/* dpcnn sweep: an experiment, one run per combination of hyperparameters.
 *
 *   dpcnn sweep EXPERIMENT-DIR --lr 0.01 --lr 0.001 --batch-size 100 --batch-size 1000
 *
 * Every option that decides a run's result (options_find: its param) may be
 * given several times; the runs are the Cartesian product of those values (or
 * the lines of --runs FILE), each in EXPERIMENT-DIR/<the parameters that differ
 * between runs>, e.g. lr=0.01,batch_size=100. Under mpirun the world is split
 * into groups (dist_split) that train different runs at the same time; a run
 * sees only its group's Dist, so its files are bitwise those of the same run
 * trained alone at any rank count. The experiment's table (experiment.csv,
 * experiment.jsonl: one row per run and epoch) is built from the run
 * directories alone, so it comes out the same however the runs were trained
 * (one job in groups, or a Slurm array with --index). README "Experiments". */
#ifndef DPCNN_SWEEP_H
#define DPCNN_SWEEP_H

#include "dpcnn/dist.h"
#include "dpcnn/options.h"
#include "dpcnn/train.h"

typedef struct SweepRun SweepRun;

typedef struct {
    const char *dir;       /* EXPERIMENT-DIR */
    const char *runs_file; /* --runs FILE, or NULL */
    int group_size;        /* --group-size G (0: chosen from the ranks and the runs) */
    int resume;            /* skip finished runs, continue interrupted ones */
    int table_only;        /* --table: build the table from the run directories */
    int list_only;         /* --list: print the runs */
    long index;            /* --index I: train run I alone (a Slurm array task); -1: all */
    int launched;          /* started by mpirun or srun */
    TrainConfig common;    /* the options given once that never change a bit */
    SweepRun *runs;
    int nruns;
    RunParam varying[PARAM_COUNT]; /* what differs between runs, in order of appearance */
    int nvarying;
} SweepConfig;

/* argv[0] is "sweep". Reads --runs FILE (or EXPERIMENT-DIR/runs.txt), checks
 * every run's options with options_parse (a refused one becomes a failed run,
 * with the reason) and names the runs. Same return values as options_parse;
 * needs no MPI. */
int sweep_parse(SweepConfig *sc, int argc, char **argv, int speak);
/* --table and --list: no MPI, no training; returns the exit status. */
int sweep_offline(SweepConfig *sc);
/* Trains the runs on every rank of world, in groups, and writes the table;
 * returns the exit status (0 all done, 1 a run failed, 2 refused, 75 stopped
 * by a signal: --resume continues). */
int sweep_run(SweepConfig *sc, Dist *world);
void sweep_free(SweepConfig *sc);

#endif
