/* program.h: the forward's program's records (program.c runs them,
 * program_plan.c writes them); read by those two files only. */
#ifndef MICROGPT_TAPE_PROGRAM_H
#define MICROGPT_TAPE_PROGRAM_H

#include "internal.h"

enum { P_SLOT, P_SDOT, P_SHIFT16, P_STRIDED16, P_SCALED16, P_STRIDED, P_SHIFT, P_RANGE };

typedef struct prog {
    run_slot_t s;       /* P_SLOT: the slot; P_SDOT: L, a, da, b, db, and dL the number it starts
                         * from; P_SHIFT16, P_STRIDED16: L, dL its sums' first node and step, b the
                         * number every sum starts from (P_STRIDED16: a, da, db the shared operand
                         * and the steps) */
    int64_t ins;        /* the first instruction it does (P_SHIFT16, P_STRIDED16: its list in prog_list;
                         * P_SCALED16: the same, then its products' factor, first node and step) */
    int32_t n;          /* P_SLOT: repetitions; P_SDOT, P_STRIDED16: products; P_SHIFT16: its list's
                         * length (two a product); P_RANGE: instructions */
    uint8_t kind, period;  /* (P_SHIFT16, P_STRIDED16, P_SCALED16: its groups of four sums, 4 or 1) */
} prog_t;

#endif
