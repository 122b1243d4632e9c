/* ckpt_edit FILE ACTION: damage a checkpoint in one specific way, for the
 * tests that it is refused with the right message.
 *   reshape TENSOR    replace a model tensor by one of another shape
 *   drop-optimizer    delete /optimizer (what a weights-only file looks like)
 *   flip              change one weight's value in place (the digest must catch it)
 *   nan TENSOR        set the first element of TENSOR to NaN, in place
 *   drop-attr NAME    delete a root attribute (the digest, say)
 *   set-int NAME V    overwrite a root integer attribute (format_version 99)
 *   foreign           strip every dpcnn mark (root attributes, /optimizer): what a
 *                     PyTorch state_dict written with h5py looks like
 *   same-weights B    exit 0 if FILE and B hold bitwise-equal model tensors */
#include "config.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/error.h"
#include "dpcnn/net.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ckpt_edit FILE reshape TENSOR | drop-optimizer | flip\n");
        return 2;
    }
    if (strcmp(argv[2], "same-weights") == 0 && (argc == 4 || argc == 5)) {
        /* the network from A (a C,H,W input of 1,28,28 unless given), both
         * files read through the digest-checking loader */
        static Net net;
        static char model[NET_TEXT_MAX], normalize[256];
        Shape in = {1, 28, 28, 0};
        if (argc == 5 && sscanf(argv[4], "%d,%d,%d", &in.c, &in.h, &in.w) != 3)
            return 2;
        if (checkpoint_model(argv[1], model, normalize) < 0 ||
            net_parse(&net, model[0] ? model : net_builtin("tutorial"), argv[1]) < 0 ||
            net_build(&net, in, 0, argv[1]) < 0) {
            fprintf(stderr, "ckpt_edit: %s\n", err_get());
            return 2;
        }
        float *a = calloc(net.nparams + net.nbuffer_floats, sizeof(float));
        float *b = calloc(net.nparams + net.nbuffer_floats, sizeof(float));
        int64_t ba[NET_MAX_LAYERS], bb[NET_MAX_LAYERS];
        if (weights_load(argv[1], &net, a, a + net.nparams, ba) < 0 ||
            weights_load(argv[3], &net, b, b + net.nparams, bb) < 0) {
            fprintf(stderr, "ckpt_edit: %s\n", err_get());
            return 2;
        }
        int differ = memcmp(a, b, sizeof(float) * (net.nparams + net.nbuffer_floats)) != 0 ||
                     memcmp(ba, bb, sizeof(int64_t) * (size_t)net.nbatchnorm) != 0;
        free(a);
        free(b);
        return differ;
    }
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0)
        return 1;
    int rc = 0;
    if (strcmp(argv[2], "reshape") == 0 && argc == 4) {
        rc = H5Ldelete(f, argv[3], H5P_DEFAULT) < 0;
        hsize_t dims[2] = {7, 3};
        hid_t s = H5Screate_simple(2, dims, NULL);
        hid_t d = H5Dcreate2(f, argv[3], H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        float zeros[21] = {0};
        rc |= d < 0 || H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) < 0;
        H5Dclose(d);
        H5Sclose(s);
    } else if (strcmp(argv[2], "drop-optimizer") == 0) {
        rc = H5Ldelete(f, "optimizer", H5P_DEFAULT) < 0;
    } else if (strcmp(argv[2], "flip") == 0) {
        hid_t d = H5Dopen2(f, "fc1.bias", H5P_DEFAULT);
        float b[120];
        rc = d < 0 || H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) < 0;
        b[7] += 1.0f;
        rc |= H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) < 0;
        H5Dclose(d);
    } else if (strcmp(argv[2], "nan") == 0 && argc == 4) {
        hid_t d = H5Dopen2(f, argv[3], H5P_DEFAULT);
        hid_t fs = d < 0 ? -1 : H5Dget_space(d);
        hsize_t off[4] = {0, 0, 0, 0}, one[4] = {1, 1, 1, 1};
        hid_t ms = H5Screate_simple(1, one, NULL);
        float v = NAN;
        rc = d < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, one, NULL) < 0 ||
             H5Dwrite(d, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v) < 0;
        H5Sclose(ms);
        if (d >= 0) {
            H5Sclose(fs);
            H5Dclose(d);
        }
    } else if (strcmp(argv[2], "drop-attr") == 0 && argc == 4) {
        rc = H5Adelete(f, argv[3]) < 0;
    } else if (strcmp(argv[2], "set-int") == 0 && argc == 5) {
        long long v = atoll(argv[4]);
        hid_t a = H5Aopen(f, argv[3], H5P_DEFAULT);
        rc = a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &v) < 0;
        if (a >= 0)
            H5Aclose(a);
    } else if (strcmp(argv[2], "foreign") == 0) {
        hid_t root = H5Gopen2(f, "/", H5P_DEFAULT);
        while (H5Aget_num_attrs(root) > 0)
            if (H5Adelete_by_idx(root, ".", H5_INDEX_NAME, H5_ITER_INC, 0, H5P_DEFAULT) < 0) {
                rc = 1;
                break;
            }
        H5Gclose(root);
        rc |= H5Ldelete(f, "optimizer", H5P_DEFAULT) < 0;
    } else {
        fprintf(stderr, "ckpt_edit: unknown action %s\n", argv[2]);
        rc = 2;
    }
    H5Fclose(f);
    return rc;
}
