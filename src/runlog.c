#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dpcnn/dist.h"
#include "dpcnn/error.h"
#include "dpcnn/fsutil.h"
#include "dpcnn/runlog.h"

/* Keep the records a resumed run would have written by now; drop the rest.
 * Only dpcnn's own lines are read: "type", "epoch" and "step" are found by key. */
static int keep_line(const char *line, int epochs_done, int64_t resume_step)
{
    const char *type = strstr(line, "\"type\":\"");
    if (!type)
        return 0;
    type += 8;
    if (strncmp(type, "epoch\"", 6) == 0) {
        const char *e = strstr(line, "\"epoch\":");
        return e && atoi(e + 8) <= epochs_done;
    }
    if (strncmp(type, "step\"", 5) == 0) {
        const char *s = strstr(line, "\"step\":");
        return s && atoll(s + 7) <= resume_step;
    }
    return 0;
}

static int filter_metrics(const char *path, int epochs_done, int64_t resume_step)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return errno == ENOENT ? 0 : err_set("%s: cannot read: %s", path, strerror(errno));
    char tmp[4300];
    fs_temp_name(tmp, sizeof tmp, path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return err_set("%s: cannot write: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0)
        if (keep_line(line, epochs_done, resume_step))
            fputs(line, out);
    free(line);
    fclose(in);
    if (fclose(out) != 0) {
        unlink(tmp);
        return err_set("%s: cannot write: %s", tmp, strerror(errno));
    }
    return fs_commit(tmp, path);
}

int runlog_open(RunLog *log, const char *dir, int epochs_done, int64_t resume_step, int quiet,
                int log_every, int launched)
{
    memset(log, 0, sizeof *log);
    log->quiet = quiet;
    log->log_every = log_every;
    /* A live line only on a real terminal: under mpirun each rank's stdout is
     * a pseudo-terminal even when mpirun's own output goes to a log file, so
     * under a launcher print plain lines (DPCNN_PROGRESS=tty forces the line). */
    const char *force = getenv("DPCNN_PROGRESS");
    log->tty = force ? strcmp(force, "tty") == 0 : isatty(STDOUT_FILENO) && !launched;
    snprintf(log->path, sizeof log->path, "%s/metrics.jsonl", dir);
    if (resume_step >= 0) {
        if (filter_metrics(log->path, epochs_done, resume_step) < 0)
            return -1;
        log->metrics = fopen(log->path, "a");
    } else {
        if (fs_exists(log->path))
            msg_warn("%s exists: starting it afresh for this run", log->path);
        log->metrics = fopen(log->path, "w");
    }
    if (!log->metrics)
        return err_set("%s: cannot write: %s", log->path, strerror(errno));
    return 0;
}

void runlog_close(RunLog *log)
{
    if (log->line_open)
        fputc('\n', stdout);
    log->line_open = 0;
    if (log->metrics)
        fclose(log->metrics);
    log->metrics = NULL;
}

static void clear_line(RunLog *log)
{
    if (log->line_open) {
        fputs("\r\033[K", stdout);
        log->line_open = 0;
    }
}

static void say(RunLog *log, int even_if_quiet, const char *fmt, va_list ap)
{
    if (msg_rank() != 0 || (log->quiet && !even_if_quiet))
        return;
    clear_line(log);
    fputs(msg_tag(), stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void runlog_notice(RunLog *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(log, 1, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 2, 3))) runlog_say(RunLog *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(log, 0, fmt, ap);
    va_end(ap);
}

static void format_eta(char *buf, size_t n, double s)
{
    long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void runlog_progress(RunLog *log, const Progress *p)
{
    if (msg_rank() != 0 || log->quiet)
        return;
    char eta[32];
    format_eta(eta, sizeof eta, p->eta_seconds);
    if (log->tty) {
        double now = dist_wtime();
        if (now - log->last_draw < 0.25 && p->step != p->steps)
            return;
        log->last_draw = now;
        printf("\r\033[Kepoch %d/%d  step %" PRId64 "/%" PRId64 "  loss %.4f  %.0f samples/s  "
               "%s left",
               p->epoch, p->epochs, p->step, p->steps, p->loss, p->samples_per_second, eta);
        log->line_open = 1;
        fflush(stdout);
    } else if (log->log_every > 0 && p->step % log->log_every == 0 && p->step != p->steps) {
        printf("%sepoch %d/%d step %" PRId64 "/%" PRId64 " loss %.4f %.0f samples/s %s left\n",
               msg_tag(), p->epoch, p->epochs, p->step, p->steps, p->loss, p->samples_per_second, eta);
        fflush(stdout);
    }
}

int runlog_epoch(RunLog *log, const EpochRecord *r)
{
    if (msg_rank() != 0)
        return 0;
    const double train_loss = r->train_loss_sum / (double)r->train_samples;
    const double test_loss = r->test_loss_sum / (double)r->test_samples;
    const double acc = (double)r->test_correct / (double)r->test_samples;
    const double sps = r->seconds > 0 ? (double)r->samples_run / r->seconds : 0.0;
    runlog_say(log,
               "epoch %3d  train_loss %.4f  train_correct %" PRId64 "/%" PRId64 "  test_loss %.4f"
               "  test_accuracy %.4f  %.2f s  %.0f samples/s",
               r->epoch, train_loss, r->train_correct, r->train_samples, test_loss, acc,
               r->seconds, sps);
    if (!log->metrics)
        return 0;
    fprintf(log->metrics,
            "{\"type\":\"epoch\",\"epoch\":%d,\"train_loss\":%.17g,\"train_correct\":%" PRId64
            ",\"train_samples\":%" PRId64 ",\"test_loss\":%.17g,\"test_correct\":%" PRId64
            ",\"test_samples\":%" PRId64 ",\"test_accuracy\":%.17g,\"seconds\":%.6f,"
            "\"samples_per_second\":%.3f,\"eval_seconds\":%.6f,\"shard_seconds\":%.6f,"
            "\"reduce_seconds\":%.6f,\"ranks\":%d}\n",
            r->epoch, train_loss, r->train_correct, r->train_samples, test_loss, r->test_correct,
            r->test_samples, acc, r->seconds, sps, r->eval_seconds, r->shard_seconds,
            r->reduce_seconds, r->ranks);
    if (fflush(log->metrics) != 0 || ferror(log->metrics) ||
        (fsync(fileno(log->metrics)) < 0 && errno != EINVAL))
        log->failed = errno ? errno : EIO;
    if (log->failed)
        return err_set("%s: cannot write: %s", log->path, strerror(log->failed));
    return 0;
}

void runlog_step(RunLog *log, int epoch, int64_t step, double loss_sum, int64_t correct,
                 int samples, double seconds, int ranks)
{
    if (msg_rank() != 0 || !log->metrics)
        return;
    fprintf(log->metrics,
            "{\"type\":\"step\",\"epoch\":%d,\"step\":%" PRId64 ",\"loss\":%.17g,\"correct\":%" PRId64
            ",\"samples\":%d,\"seconds\":%.6f,\"ranks\":%d}\n",
            epoch, step, loss_sum / samples, correct, samples, seconds, ranks);
    if (fflush(log->metrics) != 0 && !log->failed)
        log->failed = errno ? errno : EIO;
}
