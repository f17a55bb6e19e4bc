/* Run-time choice of the instruction set the GEMM micro-kernel uses.
 *
 * The default build targets baseline x86-64, so AVX2/AVX-512 kernels are
 * compiled with target attributes and only called when this CPU (and its OS,
 * which must save the wider registers) supports them. ALEXNET_C_ISA forces a
 * lower path so that tests check every kernel on one machine.
 */
#include "cpu_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_int active_isa = -1;
static atomic_int env_rejected;

acn_isa acn_best_isa(void)
{
#if ACN_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
        return ACN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return ACN_ISA_AVX2;
#endif
    return ACN_ISA_GENERIC;
}

acn_isa acn_active_isa(void)
{
    int isa = atomic_load(&active_isa);
    if (isa < 0) {
        isa = (int)acn_best_isa();
        atomic_store(&active_isa, isa);
    }
    return (acn_isa)isa;
}

int acn_set_isa(acn_isa isa)
{
    if ((int)isa < ACN_ISA_GENERIC || isa > acn_best_isa())
        return ACN_EINVAL;
    atomic_store(&active_isa, (int)isa);
    return ACN_OK;
}

const char *acn_isa_name(acn_isa isa)
{
    switch (isa) {
    case ACN_ISA_AVX512: return "avx512";
    case ACN_ISA_AVX2: return "avx2";
    default: return "generic";
    }
}

int acn_isa_init_from_env(void)
{
    const char *want = getenv("ALEXNET_C_ISA");
    if (want == NULL || *want == '\0')
        return 0;
    for (int isa = ACN_ISA_GENERIC; isa <= ACN_ISA_AVX512; isa++) {
        if (strcmp(want, acn_isa_name((acn_isa)isa)) == 0 && acn_set_isa((acn_isa)isa) == ACN_OK)
            return 0;
    }
    atomic_store(&env_rejected, 1);
    return -1;
}

int acn_isa_env_rejected(void) { return atomic_load(&env_rejected); }

const acn_ukernel *acn_active_ukernel(void)
{
    const acn_ukernel *k = NULL;
    switch (acn_active_isa()) {
    case ACN_ISA_AVX512: k = acn_ukernel_avx512(); break;
    case ACN_ISA_AVX2: k = acn_ukernel_avx2(); break;
    default: break;
    }
    return k ? k : acn_ukernel_generic();
}
