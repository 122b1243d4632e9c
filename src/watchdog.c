#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "dpcnn/error.h"
#include "dpcnn/watchdog.h"

static atomic_ullong g_beats;
static atomic_int g_waiting;
static atomic_llong g_step;
static const char *_Atomic g_doing = "starting";
static double g_timeout;
static char g_host[256] = "?";
static pthread_t g_thread;
static atomic_int g_running;
/* The thread naps on this condition, so that watchdog_stop wakes it at once:
 * a nap of plain sleep kept every process up to a second longer at its exit. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_wake;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *watch(void *arg)
{
    (void)arg;
    unsigned long long seen = atomic_load(&g_beats);
    double since = now();
    pthread_mutex_lock(&g_lock);
    /* g_running is read under the lock watchdog_stop signals under: no lost wake-up */
    while (atomic_load(&g_running)) {
        /* wake often enough to be on time, rarely enough to cost nothing */
        double nap = g_timeout / 20 < 1.0 ? g_timeout / 20 : 1.0;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        long long ns = (long long)until.tv_nsec + (long long)(nap * 1e9);
        until.tv_sec += (time_t)(ns / 1000000000);
        until.tv_nsec = (long)(ns % 1000000000);
        const double asleep = now();
        pthread_cond_timedwait(&g_wake, &g_lock, &until);
        if (!atomic_load(&g_running))
            break;
        /* A nap a second longer than asked: this process was not running
         * (SIGSTOP, a suspended job, a frozen VM). That time is not a hang of
         * its own: the count starts again. So a job suspended and resumed
         * (scontrol suspend) goes on, and a rank stopped and then killed by
         * its launcher (SIGCONT, SIGTERM) dies of the signal rather than
         * racing it with an exit of its own (which could leave Open MPI's
         * mpirun deadlocked in its teardown). */
        if (now() - asleep > nap + 1.0) {
            since = now();
            continue;
        }
        unsigned long long b = atomic_load(&g_beats);
        if (b != seen) {
            seen = b;
            since = now();
            continue;
        }
        /* In a collective, the MPI module names the silent rank at the
         * timeout; this thread only backs it up. */
        const int waiting = atomic_load(&g_waiting);
        if (now() - since < g_timeout + (waiting ? WATCHDOG_WAIT_GRACE : 0))
            continue;
        /* No progress: say where this rank is, then end the process. The
         * launcher takes the other ranks down; exit codes name the failure. */
        msg_error("no progress on this rank (host %s) for %.0f s (%s %lld, %s); ending the job "
                  "(--hang-timeout)",
                  g_host, now() - since, atomic_load(&g_doing), (long long)atomic_load(&g_step),
                  waiting ? "waiting for the other ranks in a collective"
                          : "computing or doing I/O on this rank");
        _exit(DPCNN_EXIT_FAILURE);
    }
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

void watchdog_start(double timeout)
{
    if (timeout <= 0 || atomic_load(&g_running))
        return;
    g_timeout = timeout;
    if (gethostname(g_host, sizeof g_host) != 0)
        snprintf(g_host, sizeof g_host, "?");
    g_host[sizeof g_host - 1] = '\0';
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* naps immune to clock changes */
    pthread_cond_init(&g_wake, &ca);
    pthread_condattr_destroy(&ca);
    atomic_store(&g_running, 1);
    if (pthread_create(&g_thread, NULL, watch, NULL) != 0) {
        atomic_store(&g_running, 0);
        msg_warn("cannot start the watchdog thread: hangs will not be detected");
    }
}

void watchdog_stop(void)
{
    if (!atomic_exchange(&g_running, 0))
        return;
    pthread_mutex_lock(&g_lock);
    pthread_cond_signal(&g_wake);
    pthread_mutex_unlock(&g_lock);
    pthread_join(g_thread, NULL);
    pthread_cond_destroy(&g_wake);
}

void watchdog_beat(const char *doing, long long step)
{
    atomic_store(&g_doing, doing);
    atomic_store(&g_step, step);
    atomic_fetch_add(&g_beats, 1);
}

double watchdog_timeout(void)
{
    return atomic_load(&g_running) ? g_timeout : 0;
}

void watchdog_tick(void)
{
    atomic_fetch_add(&g_beats, 1);
}

const char *watchdog_doing(long long *step)
{
    *step = (long long)atomic_load(&g_step);
    return atomic_load(&g_doing);
}

void watchdog_waiting(int waiting)
{
    if (waiting)
        atomic_fetch_add(&g_beats, 1);
    atomic_store(&g_waiting, waiting);
}
