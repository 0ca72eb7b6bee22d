/* panels.c: a level's matrices over every position at once (levels.c), the
 * lanes of a SIMD register across positions instead of across rows.
 *
 * A level's matrix unit is the same rows (16, or 4) at every position, times
 * that position's vector. Where the build finds each unit in the plain shape
 * model.linear makes (its rows consecutive parameters, its sums' nodes
 * consecutive, every sum starting from one node), the forward runs it as a
 * panel: the positions' vectors gathered once a level, eight positions a
 * block ([block][j][8 lanes]), and four rows times a block in eight registers,
 * each weight read once a block from the rows as they are (no transposed
 * copy). Lane c of row r is the sum of row r at position c of the block, in
 * its own order: w_0 v_0 + init, then + w_j v_j, multiplied then added, never
 * fused (-ffp-contract=off), never reassociated: the numbers matrix.c's kernels
 * make. A unit of any other shape leaves the tape without panels (matrix.c's
 * kernels run it, position by position). Where only its unit reads a row
 * (params.c params_outside_plan), the unit copies its rows from the arena
 * into x itself, the next unit's asked for while it computes (rows_ahead). */
#include "internal.h"
#include "lanes.h"

#define BLOCK 8  /* positions a block: two registers */

typedef struct panel_unit {
    int32_t w0, len, rows;  /* rows consecutive rows of len weights, from parameter w0 */
    int32_t same_vec;       /* it reads the vector the unit before it reads, at every position */
} panel_unit_t;

typedef struct panel_read {  /* unit u at position p: panel_reads[u N + p] */
    int64_t vsrc;           /* its vector's first node (>= 0), or -1 - where its list is in dot_pair */
    int32_t top, init;      /* row r's sum is node top + r; every sum starts from node init */
} panel_read_t;

/* Unit u at position p as a panel read, if its groups have the plain shape. */
static int panel_read(const tape_t *t, const matvec_t *g, const panel_unit_t *u, panel_read_t *r) {
    r->vsrc = g->vec >= 0 ? g->vec : -1 - g->pairs;
    r->top = g->top[0];
    r->init = g->init[0];
    if (g->w[0] != u->w0 || g->len != u->len || SIDE * g->run != u->rows) return 0;
    for (int32_t k = 0; k < g->run; ++k)
        for (int c = 0; c < SIDE; ++c) {
            int32_t row = SIDE * k + c;
            if (g[k].w[c] != u->w0 + row * u->len || g[k].len != u->len || g[k].top[c] != r->top + row
                || g[k].init[c] != r->init)
                return 0;
        }
    return 1;
}

/* Do reads a and b take the same numbers as their vector? */
static int same_vector(const tape_t *t, const panel_read_t *a, const panel_read_t *b, int32_t len) {
    if (a->vsrc >= 0 || b->vsrc >= 0) return a->vsrc == b->vsrc;
    const int32_t *va = t->dot_pair + (-1 - a->vsrc) + 1, *vb = t->dot_pair + (-1 - b->vsrc) + 1;
    for (int32_t j = 0; j < len; ++j)
        if (va[2 * j] != vb[2 * j]) return 0;
    return 1;
}

/* After level_plan: 0 (panels, or none where a unit does not fit), or -1 out of memory. */
int panel_plan(tape_t *t) {
    int32_t nl = t->n_levels, N = t->n_pos, nu = nl > 0 ? t->level_units[nl] : 0, maxlen = 0;
    if (nu == 0) return 0;
    panel_unit_t *units = NULL;
    panel_read_t *reads = NULL;
    if (!NEW(units, nu) || !NEW(reads, (int64_t)nu * N)) {
        free(units);
        return -1;
    }
    int ok = 1;
    for (int32_t s = 0; s < nl && ok; ++s)
        for (int32_t u = t->level_units[s]; u < t->level_units[s + 1] && ok; ++u) {
            const matvec_t *g0 = t->mv + t->level_mv[(int64_t)u * N];
            panel_unit_t *pu = units + u;
            pu->w0 = g0->w[0]; pu->len = g0->len; pu->rows = SIDE * g0->run;
            pu->same_vec = u > t->level_units[s];
            maxlen = pu->len > maxlen ? pu->len : maxlen;
            for (int32_t p = 0; p < N && ok; ++p) {
                panel_read_t *r = reads + (int64_t)u * N + p;
                ok = panel_read(t, t->mv + t->level_mv[(int64_t)u * N + p], pu, r);
                if (ok && pu->same_vec)
                    pu->same_vec = pu->len == pu[-1].len && same_vector(t, r, r - N, pu->len);
            }
        }
    int64_t blocks = (N + BLOCK - 1) / BLOCK;
    if (ok && !NEW(t->panel_buf, blocks * (int64_t)maxlen * BLOCK + blocks * BLOCK)) ok = -1;
    if (ok != 1) {
        free(units); free(reads);
        return ok < 0 ? -1 : 0;
    }
    t->panel_units = units;
    t->panel_reads = reads;
    t->panel_len = maxlen;
    return params_outside_plan(t);
}

void panel_rows(const tape_t *t, int32_t u, int32_t *lo, int32_t *hi) {
    *lo = t->panel_units[u].w0;
    *hi = *lo + t->panel_units[u].rows * t->panel_units[u].len;
}

size_t panel_bytes(const tape_t *t) {
    if (t->panel_units == NULL) return 0;
    size_t nu = (size_t)t->level_units[t->n_levels], blocks = ((size_t)t->n_pos + BLOCK - 1) / BLOCK;
    return nu * (sizeof(panel_unit_t) + (size_t)t->n_pos * sizeof(panel_read_t))
        + blocks * ((size_t)t->panel_len + 1) * BLOCK * sizeof(double);
}

int64_t panel_count(const tape_t *t, int32_t n) {
    return t->panel_units == NULL ? 0 : (int64_t)t->level_units[t->n_levels] * n;
}

/* Four rows (w, len apart) times a block's vectors V ([j][8]); lane c's sums to
 * nodes tops[c] + r0 + 0..3 (c < valid), each starting from init[c]. */
#define PANEL_BODY                                                                        \
    v4 a[4][2];                                                                           \
    v4 i0 = load4(init), i1 = load4(init + 4);                                            \
    for (int r = 0; r < 4; ++r) {                                                         \
        double w0 = w[r * len];                                                           \
        a[r][0] = w0 * load4(V) + i0;                                                     \
        a[r][1] = w0 * load4(V + 4) + i1;                                                 \
    }                                                                                     \
    for (int32_t j = 1; j < len; ++j) {                                                   \
        ASK_AHEAD                                                                         \
        v4 va = load4(V + BLOCK * j), vb = load4(V + BLOCK * j + 4);                      \
        for (int r = 0; r < 4; ++r) {                                                     \
            double wj = w[r * len + j];                                                   \
            a[r][0] = a[r][0] + wj * va;                                                  \
            a[r][1] = a[r][1] + wj * vb;                                                  \
        }                                                                                 \
    }                                                                                     \
    for (int c = 0; c < valid; ++c) {                                                     \
        double *y = x + tops[c] + r0;                                                     \
        for (int r = 0; r < 4; ++r) y[r] = a[r][c / 4][c % 4];                            \
    }
#define PANEL_ARGS double *restrict x, const double *w, int32_t len, const double *restrict V, \
                   const double *init, const int32_t *tops, int32_t r0, int valid, const double *from, \
                   const double *to, int sh
/* The next unit's rows asked for while a kernel computes (panel_level): a line
 * from the arena (from) and one of x to write (to) every 2^sh steps j. */
#define ASK_AHEAD                                                                         \
    if (from != NULL && (j & ((1 << sh) - 1)) == 0) {                                     \
        __builtin_prefetch(from + 8 * ((j >> sh) - 1), 0, 3);                             \
        __builtin_prefetch(to + 8 * ((j >> sh) - 1), 1, 3);                               \
    }
KERNELS(panel, (PANEL_ARGS), PANEL_BODY)

/* The same with eight lanes a register (AVX-512): a block in one register, R
 * rows times B blocks at once (R B sums in flight, where four would wait on
 * each other's latency), each lane's sum in the same order. Each row through
 * its own pointer, stepped by a 64-bit j. Eight rows times three blocks where
 * a unit has them, else two (eight row pointers stay in registers, where
 * sixteen spill; each weight loaded once for 24 or 16 positions): a
 * 6/128/128 step's panels 4% faster with pairs than with sixteen rows times
 * one block, 3.5% faster again with triples (one process, alternating). */
#define PANEL8_BODY(R, B)                                                                 \
    const double *wr[R];                                                                  \
    for (int r = 0; r < R; ++r) wr[r] = w + (int64_t)r * len;                             \
    v8 a[R][B];                                                                           \
    for (int b = 0; b < B; ++b) {                                                         \
        v8 i8 = load8(init + BLOCK * b), v0 = load8(V + (int64_t)b * BLOCK * len);        \
        for (int r = 0; r < R; ++r) a[r][b] = wr[r][0] * v0 + i8;                         \
    }                                                                                     \
    for (int64_t j = 1; j < len; ++j) {                                                   \
        ASK_AHEAD                                                                         \
        v8 vj[B];                                                                         \
        for (int b = 0; b < B; ++b) vj[b] = load8(V + (int64_t)b * BLOCK * len + BLOCK * j); \
        for (int r = 0; r < R; ++r) {                                                     \
            double wj = wr[r][j];                                                         \
            for (int b = 0; b < B; ++b) a[r][b] = a[r][b] + wj * vj[b];                   \
        }                                                                                 \
    }                                                                                     \
    for (int c = 0; c < valid; ++c) {                                                     \
        double *y = x + tops[c] + r0;                                                     \
        for (int r = 0; r < R; ++r) y[r] = a[r][c / BLOCK][c % BLOCK];                    \
    }
WIDE(panel, (PANEL_ARGS), PANEL8_BODY(4, 1))
WIDE(panel_sixteen, (PANEL_ARGS), PANEL8_BODY(16, 1))
WIDE(panel_pair, (PANEL_ARGS), PANEL8_BODY(8, 2))
WIDE(panel_triple, (PANEL_ARGS), PANEL8_BODY(8, 3))
#ifdef HAVE_AVX2
#define SIXTEEN_ROWS (lanes_level() >= LANES_AVX512 ? panel_sixteen_avx512 : NULL)
#define BLOCK_PAIRS (lanes_level() >= LANES_AVX512 ? panel_pair_avx512 : NULL)
#define BLOCK_TRIPLES (lanes_level() >= LANES_AVX512 ? panel_triple_avx512 : NULL)
#else
#define SIXTEEN_ROWS NULL
#define BLOCK_PAIRS NULL
#define BLOCK_TRIPLES NULL
#endif

/* Positions [0, n)'s vectors of unit u into the blocks (lanes past n: 0). */
static void gather(tape_t *t, const panel_read_t *reads, int32_t len, int32_t n) {
    double *V = t->panel_buf;
    for (int32_t b = 0; b * BLOCK < n; ++b, V += (int64_t)BLOCK * len) {
        const double *src[BLOCK];
        int direct = b * BLOCK + BLOCK <= n;
        for (int c = 0; c < BLOCK && direct; ++c) {
            const panel_read_t *r = reads + b * BLOCK + c;
            direct = r->vsrc >= 0;
            src[c] = t->x + (direct ? r->vsrc : 0);
        }
        if (direct) {  /* a full block of vectors in place: a line of the block at a time, the
                        * eight read side by side (column by column, each store is to another line) */
            for (int32_t j = 0; j < len; ++j)
                for (int c = 0; c < BLOCK; ++c) V[BLOCK * j + c] = src[c][j];
            continue;
        }
        for (int c = 0; c < BLOCK; ++c) {
            int32_t p = b * BLOCK + c;
            if (p >= n) {
                for (int32_t j = 0; j < len; ++j) V[BLOCK * j + c] = 0.0;
                continue;
            }
            const panel_read_t *r = reads + p;
            if (r->vsrc >= 0) {
                const double *v = t->x + r->vsrc;
                for (int32_t j = 0; j < len; ++j) V[BLOCK * j + c] = v[j];
            } else {
                const int32_t *v = t->dot_pair + (-1 - r->vsrc) + 1;
                for (int32_t j = 0; j < len; ++j) V[BLOCK * j + c] = t->x[v[2 * j]];
            }
        }
    }
}

/* The blocks a kernel step from block b takes: three, two or one (pairs: the
 * unit's rows go eight at a time, with pairs and triples of blocks). */
static int step_blocks(int32_t b, int32_t blocks, int pairs) {
    return pairs && b + 2 < blocks ? 3 : pairs && b + 1 < blocks ? 2 : 1;
}

/* The kernels' calls a step of k blocks makes over `rows` rows. */
static int32_t step_calls(int k, int32_t rows, int sixteen) {
    return k > 1 ? rows / 8 : sixteen ? rows / 16 + rows % 16 / 4 : rows / 4;
}

/* With panel_from (params_read_forward): unit u's rows into x as the unit
 * comes, and the next unit's asked for while this one's kernels compute, a
 * line every 2^sh steps j, sh the largest that asks for all of them: the copy
 * then reads and writes lines in the cache, where a copy of every parameter
 * ahead of the forward waits on memory (10 MB a 6/128/128 step; 1.2 ms less a
 * step, one process alternating). Returns sh (and in *next the next unit,
 * NULL: none). */
static int rows_ahead(tape_t *t, int32_t u, int32_t blocks, int pairs, int sixteen, const panel_unit_t **next) {
    const panel_unit_t *pu = t->panel_units + u;
    memcpy(t->x + pu->w0, t->panel_from + pu->w0, (size_t)pu->rows * (size_t)pu->len * sizeof *t->x);
    *next = u + 1 < t->level_units[t->n_levels] ? pu + 1 : NULL;
    if (*next == NULL) return 0;
    int64_t steps = 0, lines = ((int64_t)pu[1].rows * pu[1].len + 7) / 8;
    for (int32_t b = 0, k; b < blocks; b += k) {
        k = step_blocks(b, blocks, pairs);
        steps += (int64_t)step_calls(k, pu->rows, sixteen) * (pu->len - 1);
    }
    int sh = 0;
    while (sh < 6 && (steps >> (sh + 1)) >= lines) ++sh;
    return sh;
}

/* Level s's matrix units over positions [0, n). Each unit's sums' first
 * numbers are gathered once, ahead of the blocks (a kernel's register load of
 * lanes stored one by one just before waits on the stores). */
void panel_level(tape_t *t, int32_t s, int32_t n) {
    int32_t N = t->n_pos, blocks = (n + BLOCK - 1) / BLOCK;
    void (*four)(PANEL_ARGS) = KERNEL_WIDE(panel), (*sixteen)(PANEL_ARGS) = SIXTEEN_ROWS;
    void (*pairs)(PANEL_ARGS) = BLOCK_PAIRS, (*triples)(PANEL_ARGS) = BLOCK_TRIPLES;  /* (both, or neither) */
    double *inits = t->panel_buf + (int64_t)t->panel_len * BLOCK * blocks;  /* past the vectors */
    for (int32_t u = t->level_units[s]; u < t->level_units[s + 1]; ++u) {
        const panel_unit_t *pu = t->panel_units + u, *next = NULL;
        const panel_read_t *reads = t->panel_reads + (int64_t)u * N;
        int by_eight = pairs != NULL && pu->rows % 8 == 0;
        int sh = t->panel_from != NULL ? rows_ahead(t, u, blocks, by_eight, sixteen != NULL, &next) : 0;
        int64_t ahead = next != NULL ? next->w0 : 0, ahead_end = next != NULL ? next->w0 + (int64_t)next->rows * next->len : 0;
        if (!pu->same_vec) gather(t, reads, pu->len, n);
        for (int32_t p = 0; p < blocks * BLOCK; ++p) inits[p] = t->x[reads[p < n ? p : 0].init];
        for (int32_t b = 0; b < blocks;) {
            int k = step_blocks(b, blocks, by_eight), width = k * BLOCK;  /* positions this step */
            int32_t tops[3 * BLOCK], r0 = 0;
            int valid = n - b * BLOCK < width ? n - b * BLOCK : width;
            for (int c = 0; c < width; ++c) tops[c] = reads[b * BLOCK + (c < valid ? c : 0)].top;
            const double *V = t->panel_buf + (int64_t)b * BLOCK * pu->len, *init = inits + b * BLOCK;
            const double *w = t->x + pu->w0;
            b += k;
#define CALL(kernel) do {                                                                                \
                int64_t asked = 8 * (int64_t)((pu->len - 1) >> sh);  /* (none past the next unit's) */   \
                const double *from = ahead + asked <= ahead_end ? t->panel_from + ahead : NULL;          \
                (kernel)(t->x, w + (int64_t)r0 * pu->len, pu->len, V, init, tops, r0, valid, from, t->x + ahead, sh); \
                ahead += from != NULL ? asked : 0;                                                         \
            } while (0)
            for (; k > 1 && r0 < pu->rows; r0 += 8) CALL(k == 3 ? triples : pairs);
            if (sixteen != NULL)
                for (; r0 + 16 <= pu->rows; r0 += 16) CALL(sixteen);
            for (; r0 < pu->rows; r0 += 4) CALL(four);
#undef CALL
        }
    }
}
