/* The helpers of fuzz.h. */
#include "config.h"

#include <ctype.h>

#include "dpcnn/error.h"
#include "fuzz.h"

static char g_path[2][4200];
static int g_fd[2] = {-1, -1};

static void remove_files(void)
{
    for (int k = 0; k < 2; k++)
        if (g_fd[k] >= 0)
            unlink(g_path[k]);
}

const char *fuzz_file(int k, const uint8_t *data, size_t size)
{
    if (g_fd[k] < 0) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_path[k], sizeof g_path[k], "%s/dpcnn-fuzz-input-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (g_fd[k ^ 1] < 0)
            atexit(remove_files);
        g_fd[k] = mkstemp(g_path[k]);
        FUZZ_CHECK(g_fd[k] >= 0, "cannot create %s", g_path[k]);
    }
    FUZZ_CHECK(ftruncate(g_fd[k], 0) == 0, "cannot truncate %s", g_path[k]);
    for (size_t done = 0; done < size;) {
        ssize_t w = pwrite(g_fd[k], data + done, size - done, (off_t)done);
        FUZZ_CHECK(w > 0, "cannot write %s", g_path[k]);
        done += (size_t)w;
    }
    return g_path[k];
}

void fuzz_clear_error(void) { err_set("%s", ""); }

/* HDF5 and zlib are not instrumented, so libFuzzer sees none of their
 * branches. The next best signal of how far into them an input got is which
 * refusal it met: each distinct message lights one of libFuzzer's extra
 * counters (in other builds, just an array). Only its words count (letters,
 * three or more, outside the file name), so the sizes, offsets and hex bytes
 * a message quotes do not make every input look new. */
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t g_counters[4096];

static void count_message(const char *what, const char *msg, const char *path)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *c = what; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    size_t skip = strlen(path);
    for (const char *c = msg; *c;) {
        if (strncmp(c, path, skip) == 0) {
            c += skip;
            continue;
        }
        size_t word = 0, alpha = 1;
        while (isalnum((unsigned char)c[word])) {
            alpha &= !isdigit((unsigned char)c[word]);
            word++;
        }
        if (word >= 3 && alpha)
            for (size_t i = 0; i <= word; i++) /* the word and the separator after it */
                h = (h ^ (uint8_t)c[i]) * 16777619u;
        c += word ? word : 1;
    }
    g_counters[h % sizeof g_counters] = 1;
}

void fuzz_check_outcome(int rc, const char *what, const char *path)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("FUZZ_VERBOSE") != NULL;
    FUZZ_CHECK(rc == 0 || rc == -1, "%s returned %d, neither 0 nor -1", what, rc);
    if (verbose)
        printf("  %s: %s%s\n", what, rc == 0 ? "accepted" : "refused: ", rc == 0 ? "" : err_get());
    if (rc == 0)
        return;
    const char *msg = err_get();
    FUZZ_CHECK(strcmp(msg, "unknown error") != 0, "%s failed without a message", what);
    const char *at = strstr(msg, path);
    FUZZ_CHECK(at != NULL, "%s failed with a message that does not name %s: %s", what, path, msg);
    /* once: twice is a message mangled by being built from itself */
    FUZZ_CHECK(strstr(at + 1, path) == NULL, "%s failed with a message naming %s twice: %s",
               what, path, msg);
    count_message(what, msg, path);
}

void fuzz_check_accepted(int accepted)
{
    static int expect = -1;
    if (expect < 0)
        expect = getenv("FUZZ_EXPECT_ACCEPT") != NULL;
    FUZZ_CHECK(accepted || !expect, "a valid input (a seed) was refused");
}
