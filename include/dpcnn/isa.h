/* Which vector instructions dpcnn's own kernels use: AVX-512, AVX2 with FMA,
 * or plain C. Chosen once at start-up from the CPU (the widest it has), or
 * forced with DPCNN_ISA=avx512|avx2|generic; a path the CPU lacks is refused.
 *
 * Every path computes every output by the same sequence of IEEE operations:
 * kernels vectorise across independent outputs only, never across one
 * output's sum, and every multiply-add is one fused multiply-add, in hardware
 * (vfmadd) or, on the plain C path, in software with the same correctly
 * rounded result (fma_exact in gemm.c). So the path changes the speed, never
 * a bit of the result. */
#ifndef DPCNN_ISA_H
#define DPCNN_ISA_H

typedef enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 } Isa;

/* From DPCNN_ISA or the CPU; -1 with a message if DPCNN_ISA asks for a path
 * this CPU lacks, or names none. Idempotent. */
int isa_select(void);
Isa isa_current(void);
/* isa_select once more, from DPCNN_ISA as it is now (for the tests). */
int isa_select_again(void);
const char *isa_name(Isa isa);
/* Whether this CPU can run the path. */
int isa_supported(Isa isa);

#endif
