#include "config.h"

#include <string.h>

#include "dpcnn/error.h"
#include "dpcnn/layers.h"

const Engine engine_native = {
    "native", conv2d_forward, conv2d_backward, conv_pool_forward, conv_pool_backward, linear_forward,
    linear_backward,
};

const Engine engine_openblas = {
    "openblas", conv2d_forward_blas, conv2d_backward_blas, conv_pool_forward_blas,
    conv_pool_backward_blas,
    linear_forward_blas, linear_backward_blas,
};

static const Engine *g_engine = &engine_native;

int engine_select(const char *name)
{
    if (strcmp(name, "native") == 0)
        g_engine = &engine_native;
    else if (strcmp(name, "openblas") == 0)
        g_engine = &engine_openblas;
    else
        return err_set("--kernels %s: expected native or openblas", name);
    return 0;
}

const Engine *engine_current(void)
{
    return g_engine;
}
