#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "dpcnn/error.h"
#include "dpcnn/isa.h"

static Isa g_isa = ISA_GENERIC;
static int g_selected;

const char *isa_name(Isa isa)
{
    switch (isa) {
    case ISA_AVX512: return "avx512";
    case ISA_AVX2: return "avx2";
    default: return "generic";
    }
}

int isa_supported(Isa isa)
{
    __builtin_cpu_init();
    switch (isa) {
    case ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return 1;
    }
}

int isa_select(void)
{
    if (g_selected)
        return 0;
    const char *want = getenv("DPCNN_ISA");
    if (want && *want) {
        Isa isa;
        if (strcmp(want, "avx512") == 0)
            isa = ISA_AVX512;
        else if (strcmp(want, "avx2") == 0)
            isa = ISA_AVX2;
        else if (strcmp(want, "generic") == 0)
            isa = ISA_GENERIC;
        else
            return err_set("DPCNN_ISA=%s: expected avx512, avx2 or generic", want);
        if (!isa_supported(isa))
            return err_set("DPCNN_ISA=%s: this CPU lacks the %s instructions (it can run %s)",
                           want, isa == ISA_AVX512 ? "AVX-512 (F, BW, VL, DQ)" : "AVX2 and FMA",
                           isa_supported(ISA_AVX2) ? "avx2 or generic" : "generic");
        g_isa = isa;
    } else {
        g_isa = isa_supported(ISA_AVX512) ? ISA_AVX512
                : isa_supported(ISA_AVX2) ? ISA_AVX2
                                          : ISA_GENERIC;
    }
    g_selected = 1;
    return 0;
}

Isa isa_current(void)
{
    if (!g_selected && isa_select() < 0)
        g_isa = ISA_GENERIC, g_selected = 1;
    return g_isa;
}

int isa_select_again(void)
{
    g_selected = 0;
    return isa_select();
}
