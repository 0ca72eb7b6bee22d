/* program.c: the forward's work between the matrices (levels.c) as one array
 * of records, in the order level_forward meets it: level by level, each
 * level's positions in order. A record holds what it reads (its nodes, their
 * steps, its operation and exponent), so that a replay reads its program front
 * to back as one stream instead of, for each instruction, the instruction
 * arrays (fwd, fwd_code, fwd_arg: 17 bytes an instruction, scattered between
 * runs), then a run's or a chain's record elsewhere, then the node-indexed
 * op and operand: at a step's size (tens of MiB) each of those is a miss.
 *
 * The records, each computing what its instructions compute, in their order:
 *   P_SLOT    one slot of an elementwise run over its repetitions, or a lone
 *             addition, product, one-child operation or copy (one repetition);
 *   P_SDOT    a chain whose products' operands step by constants (a norm's
 *             sum of squares, an attention logit): sum x[a + j da] * x[b + j db]
 *             from x[init], each product and addition in the chain's order;
 *   P_SHIFT16, P_STRIDED16  four groups of shifted.c or strided.c (or one
 *             group of strided.c) whose sums are nodes a constant step apart,
 *             each starting from one node: their list (products' operands, or
 *             second operands) copied into prog_list in the program's order;
 *   P_SCALED16  a P_STRIDED16 whose sums are each multiplied next by one
 *             number (an attention logit by 1 / sqrt(head_dim)): the products
 *             into nodes a constant step apart, in their instructions' order,
 *             right after the sums (as the instructions that follow its
 *             instruction would: its groups' others are done with it);
 *   P_STRIDED, P_SHIFT  the other groups of strided.c and shifted.c, as they run;
 *   P_RANGE   anything else, instructions [ins, ins + n) as run_forward does
 *             (an operand re-pointed at each replay, a derived number, a chain
 *             whose list has no constant steps, a group of four chains).
 * program_plan checks each record against its instructions as it writes it;
 * an instruction it cannot place keeps the instruction path (P_RANGE), and a
 * tape without levels has no program. A failed operation stops the program;
 * tape_forward then runs the step again in order, as it did. */
#include "program.h"

size_t program_bytes(const tape_t *t) {
    if (t->prog == NULL) return 0;
    return (size_t)t->n_prog * sizeof *t->prog + ((size_t)t->n_levels * t->n_pos + 1) * sizeof *t->prog_at
        + (size_t)t->n_prog_list * sizeof *t->prog_list;
}

void program_counts(const tape_t *t, int32_t n, int64_t *records, int64_t *by_steps, int64_t *scaled) {
    *records = *by_steps = *scaled = 0;
    for (int32_t s = 0; s < t->n_levels && t->prog != NULL; ++s)
        for (int64_t k = t->prog_at[(int64_t)s * t->n_pos]; k < t->prog_at[(int64_t)s * t->n_pos + n]; ++k) {
            uint8_t kind = t->prog[k].kind;
            *records += 1;
            *by_steps += kind == P_SDOT || kind == P_SHIFT16 || kind == P_STRIDED16 || kind == P_SCALED16;
            *scaled += kind == P_SCALED16 ? SIDE * t->prog[k].period : 0;
        }
}

/* m0 + init, then + m_j: the chain's own additions, in its order (replay.c's F_DOT). */
static inline void strided_dot(double *x, const prog_t *r) {
    const run_slot_t *s = &r->s;
    const double *a = x + s->a, *b = x + s->b;
    int64_t da = s->da, db = s->db;
    double acc = a[0] * b[0] + x[s->dL];
    for (int64_t j = 1; j < r->n; ++j) acc = acc + a[j * da] * b[j * db];
    x[s->L] = acc;
}

/* Sixteen sums from one node into nodes L + k dL (P_SHIFT16, P_STRIDED16); a single
 * group (period 1) as four alike, each lane's sum the same as its group's: the same
 * number written four times. */
static void sixteen(double *x, const prog_t *r, const int32_t *list) {
    double init[SIDE * SIDE];
    int32_t out[SIDE * SIDE], b[SIDE * SIDE];
    int n = SIDE * r->period;
    for (int k = 0; k < SIDE * SIDE; ++k) {
        init[k] = x[r->s.b];
        out[k] = r->s.L + (k & (n - 1)) * r->s.dL;  /* (n: 4 or 16) */
        b[k] = r->kind != P_SHIFT16 ? list[k & (n - 1)] : 0;
    }
    if (r->kind == P_SHIFT16) shift16(x, list, r->n, init, out);
    else strided16(x, r->s.a, r->s.da, r->s.db, r->n, b, init, out);
}

/* A P_SCALED16: its sums, then each times the one number, as its products'
 * instructions multiply (x[sum k] * x[scale] into node m0 + k dm), in order. */
static void scaled(double *x, const prog_t *r, const int32_t *list) {
    sixteen(x, r, list);
    int n = SIDE * r->period;
    const int32_t *tail = list + n;
    double c = x[tail[0]];
    for (int k = 0; k < n; ++k) x[tail[1] + (int64_t)k * tail[2]] = x[r->s.L + (int64_t)k * r->s.dL] * c;
}

/* Level s's work outside its matrices at position p (level_forward). */
status_t program_run(tape_t *t, int32_t s, int32_t p) {
    int64_t at = (int64_t)s * t->n_pos + p;
    double m = 0.0;  /* the last derived number's max (a piece is one call of run_forward) */
    for (const prog_t *r = t->prog + t->prog_at[at], *end = t->prog + t->prog_at[at + 1]; r < end; ++r) {
        status_t st = OP_OK;
        switch (r->kind) {
        case P_SLOT: st = elementwise_slot(t, &r->s, r->n, r->ins, r->period, &m); break;
        case P_SDOT: strided_dot(t->x, r); break;
        case P_SHIFT16: case P_STRIDED16: sixteen(t->x, r, t->prog_list + r->ins); break;
        case P_SCALED16: scaled(t->x, r, t->prog_list + r->ins); break;
        case P_STRIDED: strided_dots(t, r->ins); break;
        case P_SHIFT: shifted_dots(t, r->ins); break;
        default: st = forward_range(t, r->ins, r->ins + r->n, &m);
        }
        if (st != OP_OK) return st;
    }
    return OP_OK;
}

/* Positions [from, n) one after another (the sampler's), each level's matrix
 * groups (matrix.c: the transposed weights) then its records: each position's
 * instructions in their order, as run_forward does them. */
status_t program_positions(tape_t *t, int32_t from, int32_t n) {
    for (int32_t p = from; p < n; ++p)
        for (int32_t s = 0; s < t->n_levels; ++s) {
            for (int32_t u = t->level_units[s]; u < t->level_units[s + 1]; ++u)
                matrix_forward(t, t->mv + t->level_mv[(int64_t)u * t->n_pos + p], NULL);
            status_t st = program_run(t, s, p);
            if (st != OP_OK) return st;
        }
    return OP_OK;
}
