/* ckpt_edit FILE ACTION: damage a checkpoint in one specific way, for the
 * tests that it is refused with the right message.
 *   reshape TENSOR    replace a model tensor by one of another shape
 *   drop-optimizer    delete /optimizer (what a weights-only file looks like)
 *   flip              change one weight's value in place (the digest must catch it)
 *   same-weights B    exit 0 if FILE and B hold bitwise-equal model tensors */
#include "config.h"

#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "dpcnn/checkpoint.h"
#include "dpcnn/model.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: ckpt_edit FILE reshape TENSOR | drop-optimizer | flip\n");
        return 2;
    }
    if (strcmp(argv[2], "same-weights") == 0 && argc == 4) {
        static float a[MODEL_NUM_PARAMS], b[MODEL_NUM_PARAMS];
        if (weights_load(argv[1], a) < 0 || weights_load(argv[3], b) < 0)
            return 2;
        return memcmp(a, b, sizeof a) != 0;
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
    } else {
        fprintf(stderr, "ckpt_edit: unknown action %s\n", argv[2]);
        rc = 2;
    }
    H5Fclose(f);
    return rc;
}
