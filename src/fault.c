#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dpcnn/fault.h"

static struct {
    char kind[16];
    long long step;
    int rank;
} g_fault = {"", -1, -1};

void fault_read(void)
{
    const char *f = getenv("DPCNN_FAULT");
    if (!f || sscanf(f, "%15[a-z]@%lld:%d", g_fault.kind, &g_fault.step, &g_fault.rank) != 3)
        g_fault.step = -1;
}

int fault_due(const char *kind, int64_t step, int rank)
{
    return g_fault.step == step && g_fault.rank == rank && strcmp(g_fault.kind, kind) == 0;
}
