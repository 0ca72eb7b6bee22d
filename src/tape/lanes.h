/* lanes.h: four doubles in one SIMD register (GCC vector extensions), read
 * and written anywhere, and whether the processor has AVX2 (each kernel is
 * compiled twice, plainly and for AVX2, and picked at run time: KERNEL). No FMA: a lane multiplies, then adds (-ffp-contract=off). */
#ifndef MICROGPT_TAPE_LANES_H
#define MICROGPT_TAPE_LANES_H

#include <stdlib.h>
#include <string.h>

typedef double v4 __attribute__((vector_size(32)));
typedef double v4u __attribute__((vector_size(32), aligned(8), may_alias));  /* four numbers anywhere */
#define load4(p) (*(const v4u *)(p))
#define store4(p, r) (*(v4u *)(p) = (r))

#if defined(__GNUC__) && defined(__x86_64__)
#define HAVE_AVX2 1
#endif

/* The widest lanes the kernels may take: the processor's, or fewer where the
 * environment says MICROGPT_SIMD=avx2 or =plain (so that one machine can run
 * every build of every kernel: they compute the same sums in the same order).
 * Read once a file. */
enum { LANES_PLAIN = 0, LANES_AVX2 = 1, LANES_AVX512 = 2 };
static inline int lanes_level(void) {
    static int level = -1;
    if (level < 0) {
        int l = LANES_PLAIN;
#ifdef HAVE_AVX2
        l = __builtin_cpu_supports("avx512f") ? LANES_AVX512 : __builtin_cpu_supports("avx2") ? LANES_AVX2 : l;
#endif
        const char *cap = getenv("MICROGPT_SIMD");
        if (cap != NULL && strcmp(cap, "avx2") == 0 && l > LANES_AVX2) l = LANES_AVX2;
        if (cap != NULL && strcmp(cap, "plain") == 0) l = LANES_PLAIN;
        level = l;
    }
    return level;
}

static inline int use_avx2(void) { return lanes_level() >= LANES_AVX2; }

/* KERNELS(name, (parameters), body): the kernel defined twice, name##_plain
 * and (where it can be built) name##_avx2, the same body compiled for each.
 * KERNEL(name): name##_avx2 where it is built and the processor has AVX2, else
 * name##_plain: the one place a file picks between the two. */
#ifdef HAVE_AVX2
#define KERNELS(name, params, body) \
    static void name##_plain params { body } \
    __attribute__((target("avx2"))) static void name##_avx2 params { body }
#define KERNEL(name) (use_avx2() ? name##_avx2 : name##_plain)
#else
#define KERNELS(name, params, body) static void name##_plain params { body }
#define KERNEL(name) (name##_plain)
#endif

/* Eight doubles in one register, for the kernels that have an AVX-512 build
 * too: WIDE(name, (parameters), body) defines name##_avx512 from a body written
 * with v8 lanes (where it can be built), and KERNEL_WIDE(name) picks it where
 * the processor has AVX-512F, else KERNEL(name). */
typedef double v8 __attribute__((vector_size(64)));
typedef double v8u __attribute__((vector_size(64), aligned(8), may_alias));
#define load8(p) (*(const v8u *)(p))
#define store8(p, r) (*(v8u *)(p) = (r))
#ifdef HAVE_AVX2
#define WIDE(name, params, body) __attribute__((target("avx512f"))) static void name##_avx512 params { body }
#define KERNEL_WIDE(name) (lanes_level() >= LANES_AVX512 ? name##_avx512 : KERNEL(name))
#else
#define WIDE(name, params, body)
#define KERNEL_WIDE(name) KERNEL(name)
#endif

#endif
