/* corrupt_chunk FILE DATASET K: overwrite bytes in the middle of the stored
 * chunk K of DATASET, as a failing disk or a bad copy would. */
#include "config.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: corrupt_chunk FILE DATASET CHUNK_INDEX\n");
        return 2;
    }
    hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f < 0 ? -1 : H5Dopen2(f, argv[2], H5P_DEFAULT);
    haddr_t addr;
    hsize_t size, nchunks = 0;
    hid_t space = d < 0 ? -1 : H5Dget_space(d);
    if (space < 0 || H5Dget_num_chunks(d, space, &nchunks) < 0 ||
        (hsize_t)atoll(argv[3]) >= nchunks ||
        H5Dget_chunk_info(d, space, (hsize_t)atoll(argv[3]), NULL, NULL, &addr, &size) < 0) {
        fprintf(stderr, "corrupt_chunk: cannot find chunk %s of %s in %s\n", argv[3], argv[2],
                argv[1]);
        return 1;
    }
    H5Sclose(space);
    H5Dclose(d);
    H5Fclose(f);
    FILE *fp = fopen(argv[1], "r+b");
    if (!fp || fseek(fp, (long)(addr + size / 2), SEEK_SET) != 0) {
        perror(argv[1]);
        return 1;
    }
    for (int i = 0; i < 16; i++)
        fputc(0xa5 ^ i, fp);
    fclose(fp);
    printf("corrupt_chunk: damaged chunk %s of %s (%llu bytes at %llu)\n", argv[3], argv[2],
           (unsigned long long)size, (unsigned long long)addr);
    return 0;
}
