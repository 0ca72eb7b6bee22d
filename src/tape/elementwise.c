/* elementwise.c: a position's elementwise work as runs, not node by node.
 *
 * A vector's operations come as consecutive instructions: x * scale for
 * each entry of a norm, a + b for each entry of a residual, relu for each
 * entry of the MLP (a pattern of one instruction), or a softmax's
 * (val - max).exp() for each logit (three: the derived constant, the
 * addition, the exp) and e * total ** -1 (two: the pow's copy, the product).
 * Where a pattern of period T repeats R >= MIN_REPS times and each of its
 * slots' node and operands step by a constant from one repetition to the
 * next, the run is one instruction (F_RUN): slot by slot, each slot over
 * every repetition in one loop (contiguous ones in SIMD lanes).
 *
 * Each number is the same operation on the same operands as alone; only the
 * order between independent numbers changes, and elementwise_plan checks
 * from the instructions' operands that it may: a slot reads a number of its
 * run made by an earlier slot, or by its own slot at an earlier repetition
 * (a running sum: then that slot's loop runs in order, one repetition after
 * another). A run that an operation fails in (exp overflow, log of 0) is
 * computed again in order (replay.c), to stop where the reference stops. */
#include "internal.h"

#define MIN_REPS 4
#define MAX_PERIOD 4

typedef struct elem_run {
    int64_t ins;            /* its first instruction */
    int32_t period, reps, slot;  /* slots [slot, slot + period) of run_slots */
    uint8_t code0;          /* the first instruction's own code (fwd_code holds F_RUN) */
} elem_run_t;

static int elementwise(uint8_t c) {
    return c == F_ADD || c == F_MUL || c == F_ONE_CHILD || c == F_COPY || c == F_DERIVED;
}

/* Are instructions i and j the same slot of a pattern one repetition apart
 * (j - i apart)? The same code, the same operation and exponent, and (with h
 * the one before i, a repetition earlier: -1 none) the same steps. */
static int repeats(const tape_t *t, int64_t h, int64_t i, int64_t j) {
    uint8_t c = t->fwd_code[i];
    if (c != t->fwd_code[j] || !elementwise(c)) return 0;
    int32_t Li = t->fwd[i], Lj = t->fwd[j];
    if (c == F_ONE_CHILD && (t->op[Li] != t->op[Lj] || memcmp(&t->operand[Li], &t->operand[Lj], sizeof(double))))
        return 0;
    if (h < 0 || c == F_DERIVED) return 1;  /* (a derived number is found from its own sources) */
    const int32_t *A = t->fwd_arg + 3 * j, *B = t->fwd_arg + 3 * i, *C = t->fwd_arg + 3 * h;
    int args = c == F_ADD || c == F_MUL ? 2 : 1;
    if (Lj - Li != Li - t->fwd[h]) return 0;
    for (int a = 0; a < args; ++a)
        if (A[a] - B[a] != B[a] - C[a]) return 0;
    return 1;
}

/* How many instructions from i0 (before i1) a pattern of period T repeats over. */
static int64_t run_length(const tape_t *t, int64_t i0, int64_t i1, int T, const uint8_t *fixed) {
    int64_t j = i0;
    for (; j < i1; ++j) {
        if (fixed[j] || !elementwise(t->fwd_code[j])) break;
        if (j >= i0 + T && !repeats(t, j >= i0 + 2 * T ? j - 2 * T : -1, j - T, j)) break;
    }
    return (j - i0) / T * T;
}

/* The operands instruction i reads: up to 2 written to o, or a derived number's sources. */
static int operands(const tape_t *t, int64_t i, const int32_t **list, int32_t *o) {
    const int32_t *A = t->fwd_arg + 3 * i;
    switch (t->fwd_code[i]) {
    case F_ADD: case F_MUL: o[0] = A[0]; o[1] = A[1]; *list = o; return 2;
    case F_DERIVED: *list = t->src + t->src_start[A[0]]; return (int)(t->src_start[A[0] + 1] - t->src_start[A[0]]);
    default: o[0] = A[0]; *list = o; return 1;
    }
}

/* May run [i0, i0 + T R) go slot by slot? made: node -> 1 + its place in the
 * run (0 elsewhere; left so). Marks serial slots in s. At most one derived
 * slot (the last derived number's max carries past the run, as in order). */
static int slot_order_holds(const tape_t *t, int64_t i0, int T, int32_t R, int32_t *made, run_slot_t *s) {
    int ok = 1, derived = 0;
    for (int k = 0; k < T; ++k) derived += t->fwd_code[i0 + k] == F_DERIVED;
    ok = derived <= 1;
    for (int64_t j = 0; j < (int64_t)T * R && ok; ++j) {
        int32_t o[2];
        const int32_t *list;
        int n = operands(t, i0 + j, &list, o);
        for (int a = 0; a < n && ok; ++a) {
            int32_t m = made[list[a]] - 1;
            if (m < 0) continue;
            if (m % T > j % T) ok = 0;  /* a later slot's number: not made yet */
            else if (m % T == j % T) s[j % T].serial = 1;
        }
        made[t->fwd[i0 + j]] = (int32_t)j + 1;
    }
    for (int64_t j = 0; j < (int64_t)T * R; ++j) made[t->fwd[i0 + j]] = 0;
    return ok;
}

/* Do a derived slot's repetitions (instructions i + r T) all take the first's
 * max (group.c share_derived), with its sign, at nodes a constant step apart? */
static int derived_shared(const tape_t *t, int64_t i, int T, int32_t R) {
    int32_t L0 = t->fwd[i], step = t->fwd[i + T] - L0;
    for (int32_t r = 1; r < R; ++r) {
        int64_t j = i + (int64_t)r * T;
        if (!t->fwd_arg[3 * j + 1] || t->fwd[j] != L0 + r * step || (t->operand[t->fwd[j]] < 0) != (t->operand[L0] < 0))
            return 0;
    }
    return 1;
}

/* A derived number's sources (a softmax's logits) a constant step apart:
 * the first, the step and how many in a, da, b (b 0: not so, read the list). */
static void strided_sources(const tape_t *t, int32_t j, run_slot_t *d) {
    const int32_t *src = t->src + t->src_start[j];
    int64_t n = t->src_start[j + 1] - t->src_start[j];
    d->a = src[0];
    d->da = n > 1 ? src[1] - src[0] : 0;
    d->b = (int32_t)n;
    for (int64_t k = 2; k < n && d->b; ++k)
        if (src[k] - src[k - 1] != d->da) d->b = 0;
}

int elementwise_plan(tape_t *t) {
    int64_t nf = t->fwd_end[t->n_pos - 1];
    uint8_t *fixed = NULL;  /* an instruction whose operand is a slot, re-pointed at each replay */
    int32_t *made = NULL;
    if (!NEW(fixed, nf) || !NEW(made, t->n_nodes)) {
        free(fixed);
        return -1;
    }
    for (int64_t j = 0; j < t->n_token_edges; ++j) fixed[t->token_arg[j] / 3] = 1;
    for (int32_t p = 0; p < t->n_pos; ++p) fixed[t->target_arg[p] / 3] = 1;
    int64_t cap = 0, n_slots = 0;
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; ++pass) {  /* count, then write */
        int32_t n_runs = 0;
        n_slots = 0;
        for (int32_t p = 0; p < t->n_pos; ++p) {
            int64_t i1 = t->fwd_end[p];
            for (int64_t i = p > 0 ? t->fwd_end[p - 1] : 0; i < i1;) {
                int best = 0;
                int64_t best_len = 0;
                for (int T = 1; T <= MAX_PERIOD; ++T) {
                    int64_t len = run_length(t, i, i1, T, fixed);
                    if (len >= (int64_t)T * MIN_REPS && len > best_len) { best = T; best_len = len; }
                }
                run_slot_t s[MAX_PERIOD];
                memset(s, 0, sizeof s);
                if (best == 0 || !slot_order_holds(t, i, best, (int32_t)(best_len / best), made, s)) { ++i; continue; }
                if (pass == 1) {
                    elem_run_t *r = t->runs + n_runs;
                    r->ins = i; r->period = best; r->reps = (int32_t)(best_len / best); r->slot = (int32_t)n_slots;
                    r->code0 = t->fwd_code[i];
                    for (int k = 0; k < best; ++k) {
                        run_slot_t *d = t->run_slots + n_slots + k;
                        const int32_t *A = t->fwd_arg + 3 * (i + k), *B = A + 3 * best;
                        *d = s[k];
                        d->code = t->fwd_code[i + k];
                        d->L = t->fwd[i + k]; d->dL = t->fwd[i + k + best] - d->L;
                        d->a = A[0]; d->da = B[0] - A[0];
                        d->b = A[1]; d->db = B[1] - A[1];
                        d->op = t->op[d->L];
                        d->k = t->operand[d->L];
                        if (d->code == F_DERIVED) {
                            d->shared = derived_shared(t, i + k, best, r->reps);
                            d->fresh = !A[1];  /* (read here, not from the instructions at each replay) */
                            strided_sources(t, A[0], d);
                        }
                    }
                    t->fwd_code[i] = F_RUN;
                    t->fwd_arg[3 * i + 2] = n_runs;  /* (unused by an elementwise instruction) */
                }
                n_runs++;
                n_slots += best;
                i += best_len;
            }
        }
        if (pass == 0) {
            cap = n_runs;
            if (!NEW(t->runs, cap) || !NEW(t->run_slots, n_slots)) rc = -1;
        }
        t->n_runs = n_runs;
    }
    free(fixed);
    free(made);
    return rc;
}

size_t elementwise_bytes(const tape_t *t) {
    int64_t slots = t->n_runs > 0 ? t->runs[t->n_runs - 1].slot + t->runs[t->n_runs - 1].period : 0;
    return (size_t)t->n_runs * sizeof *t->runs + (size_t)slots * sizeof *t->run_slots;
}

static inline const elem_run_t *run_at(const tape_t *t, int64_t i) { return t->runs + t->fwd_arg[3 * i + 2]; }
uint8_t elementwise_code(const tape_t *t, int64_t i) { return run_at(t, i)->code0; }
int64_t elementwise_len(const tape_t *t, int64_t i) { return (int64_t)run_at(t, i)->period * run_at(t, i)->reps; }
const run_slot_t *elementwise_slots(const tape_t *t, int64_t i, int *period, int32_t *reps) {
    const elem_run_t *r = run_at(t, i);
    *period = r->period;
    *reps = r->reps;
    return t->run_slots + r->slot;
}

/* One slot over R repetitions. Contiguous steps (1, or 0 for a shared operand) let
 * the compiler use SIMD lanes; each number is still one operation on its own operands. */
status_t elementwise_slot(tape_t *t, const run_slot_t *s, int32_t R, int64_t ins, int T, double *m) {
    double *x = t->x, *x_lg = t->x + t->n_nodes;
    int unit = s->dL == 1 && s->da == 1 && !s->serial;
    switch (s->code) {
    case F_ADD: case F_MUL: {
        double *y = x + s->L;
        const double *a = x + s->a, *b = x + s->b;
        if (unit && s->db == 1 && s->code == F_ADD) {  /* a residual's sums */
            for (int32_t r = 0; r < R; ++r) y[r] = a[r] + b[r];
            return OP_OK;
        }
        if (unit && s->db == 1) {
            for (int32_t r = 0; r < R; ++r) y[r] = a[r] * b[r];
            return OP_OK;
        }
        if (unit && s->db == 0 && s->code == F_MUL) {  /* a norm's x * scale */
            double c = b[0];
            for (int32_t r = 0; r < R; ++r) y[r] = a[r] * c;
            return OP_OK;
        }
        int64_t L = s->L, ia = s->a, ib = s->b;
        if (s->code == F_ADD) for (int32_t r = 0; r < R; ++r, L += s->dL, ia += s->da, ib += s->db) x[L] = x[ia] + x[ib];
        else for (int32_t r = 0; r < R; ++r, L += s->dL, ia += s->da, ib += s->db) x[L] = x[ia] * x[ib];
        return OP_OK;
    }
    case F_COPY: {
        int64_t L = s->L, a = s->a;
        for (int32_t r = 0; r < R; ++r, L += s->dL, a += s->da) { x[L] = x[a]; x_lg[L] = x_lg[a]; }
        return OP_OK;
    }
    case F_DERIVED: {
        if (s->shared) {  /* one max (or the one before the run's), one sign */
            if (s->fresh && s->b > 0) {  /* its sources a constant step apart */
                const double *v = x + s->a;
                *m = v[0];
                for (int32_t k = 1; k < s->b; ++k)
                    if (v[(int64_t)k * s->da] > *m) *m = v[(int64_t)k * s->da];
            } else if (s->fresh) {
                const int32_t *A = t->fwd_arg + 3 * ins;
                const int32_t *src = t->src + t->src_start[A[0]], *end = t->src + t->src_start[A[0] + 1];
                *m = x[*src];
                for (++src; src < end; ++src)  /* Python's max: a later item replaces only if greater */
                    if (x[*src] > *m) *m = x[*src];
            }
            double v = s->k < 0 ? -*m : *m;
            int64_t L = s->L;
            for (int32_t r = 0; r < R; ++r, L += s->dL) x[L] = v;
            return OP_OK;
        }
        for (int32_t r = 0; r < R; ++r) {  /* each its own instruction's (shared) max */
            const int32_t *A = t->fwd_arg + 3 * (ins + (int64_t)r * T);
            int32_t L = t->fwd[ins + (int64_t)r * T];
            if (!A[1]) {
                int64_t k = t->src_start[A[0]], k_end = t->src_start[A[0] + 1];
                *m = x[t->src[k]];
                for (++k; k < k_end; ++k)  /* Python's max: a later item replaces only if greater */
                    if (x[t->src[k]] > *m) *m = x[t->src[k]];
            }
            x[L] = t->operand[L] < 0 ? -*m : *m;
        }
        return OP_OK;
    }
    default: {  /* F_ONE_CHILD */
        if (s->op == OP_RELU && unit) {
            double *y = x + s->L, *lg = x_lg + s->L;
            const double *a = x + s->a;
            for (int32_t r = 0; r < R; ++r) {
                y[r] = a[r] > 0 ? a[r] : 0.0;
                lg[r] = a[r] > 0 ? 1.0 : 0.0;
            }
            return OP_OK;
        }
        int64_t L = s->L, a = s->a;
        for (int32_t r = 0; r < R; ++r, L += s->dL, a += s->da) {
            status_t st = op_apply(s->op, &x[a], s->k, s->k - 1.0, &x[L], &x_lg[L]);
            if (st != OP_OK) return st;
        }
        return OP_OK;
    }
    }
}

/* The run at instruction i, slot by slot; m: the last derived number's max. */
status_t elementwise_run(tape_t *t, int64_t i, double *m) {
    const elem_run_t *r = run_at(t, i);
    for (int k = 0; k < r->period; ++k) {
        status_t st = elementwise_slot(t, t->run_slots + r->slot + k, r->reps, r->ins + k, r->period, m);
        if (st != OP_OK) return st;
    }
    return OP_OK;
}
