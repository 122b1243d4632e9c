/* The replay driver: a harness without libFuzzer. Feeds each file named on the
 * command line to LLVMFuzzerTestOneInput, as libFuzzer would, one after the
 * other in one process (so state one input leaves behind meets the next).
 * A broken contract aborts inside the harness; make check builds this with
 * AddressSanitizer and UndefinedBehaviorSanitizer where the compiler has them,
 * so memory errors and leaks fail too, and libFuzzer's memory limit is checked
 * here after each input. */
#include "config.h"

#include <sys/resource.h>

#include "fuzz.h"

#define RSS_LIMIT_MB 2048

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap) {
            uint8_t *grown = realloc(buf, cap *= 2);
            if (!grown)
                free(buf);
            buf = grown;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    /* exactly n bytes, as libFuzzer passes them: a read past the end is caught */
    uint8_t *exact = buf ? malloc(n ? n : 1) : NULL;
    if (exact)
        memcpy(exact, buf, n);
    free(buf);
    *size = n;
    return exact;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        size_t size;
        uint8_t *data = slurp(argv[i], &size);
        if (!data) {
            fprintf(stderr, "%s: cannot read\n", argv[i]);
            return 1;
        }
        printf("%s (%zu bytes)\n", argv[i], size);
        fflush(stdout);
        int rc = LLVMFuzzerTestOneInput(data, size);
        free(data);
        if (rc != 0) {
            fprintf(stderr, "%s: the harness returned %d\n", argv[i], rc);
            return 1;
        }
        /* as libFuzzer's -rss_limit_mb: reading a small file must not take 2 GB */
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        if (ru.ru_maxrss > RSS_LIMIT_MB * 1024L) {
            fprintf(stderr, "%s: the process grew to %ld MB (limit %d MB)\n", argv[i],
                    ru.ru_maxrss / 1024, RSS_LIMIT_MB);
            return 1;
        }
    }
    return 0;
}
