/* What a run tells people and tools: progress on stdout (rank 0), and
 * metrics.jsonl, one JSON object per line with stable keys:
 *
 *   {"type":"epoch", "epoch", "train_loss", "train_correct", "train_samples",
 *    "test_loss", "test_correct", "test_samples", "test_accuracy", "seconds",
 *    "samples_per_second", "eval_seconds", "shard_seconds", "reduce_seconds", "ranks"}
 *   {"type":"step", "epoch", "step", "loss", "correct", "samples", "seconds", "ranks"}
 *
 * Everything but the timing fields ("seconds", "samples_per_second",
 * "*_seconds") and "ranks" is the same at any rank count and across resume. */
#ifndef DPCNN_RUNLOG_H
#define DPCNN_RUNLOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *metrics; /* rank 0 only */
    char path[4200];
    int quiet, log_every, tty;
    int failed;       /* a metrics write failed (a full disk): reported by runlog_epoch */
    double last_draw; /* when the terminal line was last redrawn */
    int line_open;    /* a progress line is on the terminal */
} RunLog;

/* Rank 0: open DIR/metrics.jsonl. Fresh (resume_step < 0): start it empty.
 * Resuming: keep exactly the records up to the checkpoint (epoch records up to
 * epochs_done, step records up to resume_step), rewritten atomically, so the
 * file continues as if the run had never stopped. The live progress line is
 * drawn only on a terminal and not under a launcher (launched). */
int runlog_open(RunLog *log, const char *dir, int epochs_done, int64_t resume_step, int quiet,
                int log_every, int launched);
void runlog_close(RunLog *log);

typedef struct {
    int epoch, epochs;
    int64_t step, steps; /* within the epoch, 1-based after the step */
    double loss;         /* mean training loss of the epoch so far */
    double samples_per_second, eta_seconds;
} Progress;

/* Terminal: one live line, redrawn a few times a second; a log file: one
 * plain line every log_every steps. */
void runlog_progress(RunLog *log, const Progress *p);

typedef struct {
    int epoch;
    double train_loss_sum;
    int64_t train_correct, train_samples;
    double test_loss_sum;
    int64_t test_correct, test_samples;
    double seconds, eval_seconds, shard_seconds, reduce_seconds;
    int ranks;
    int64_t samples_run; /* trained by this process (less after a resume mid-epoch) */
} EpochRecord;

/* -1 with a message if this record or an earlier step record could not be
 * written to disk (rank 0; other ranks return 0). */
int runlog_epoch(RunLog *log, const EpochRecord *r);
void runlog_step(RunLog *log, int epoch, int64_t step, double loss_sum, int64_t correct,
                 int samples, double seconds, int ranks);
/* A message line that must not collide with the live progress line, shown
 * even with --quiet: for what a batch log must show (a stop). */
void runlog_notice(RunLog *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
