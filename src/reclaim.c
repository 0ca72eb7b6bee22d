/* reclaim.c: reclaiming, the arena's collector: mark the rows a handle reaches,
 * slide them down in order (arena.h arena_reclaim); and the default arena's drop of
 * the unnamed rows on top, which moves nothing (arena_pop). */
#include "arena.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Move n bytes from src down to dst < src (the blocks may overlap), 64 bytes a
 * turn, each turn read whole before it is written; not memmove, as glibc's memmove
 * of a large block is `rep movsb`, which callgrind (the benchmarks' instruction
 * counts) counts a byte at a time. */
#if defined(__GNUC__)
typedef unsigned char chunk16 __attribute__((vector_size(16)));  /* one vector register */
#else
typedef struct { uint64_t w[2]; } chunk16;
#endif

static ARENA_NOT_MEMSET void move_down(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        chunk16 t0, t1, t2, t3;
        memcpy(&t0, s + i, 16);
        memcpy(&t1, s + i + 16, 16);
        memcpy(&t2, s + i + 32, 16);
        memcpy(&t3, s + i + 48, 16);
        memcpy(d + i, &t0, 16);
        memcpy(d + i + 16, &t1, 16);
        memcpy(d + i + 32, &t2, 16);
        memcpy(d + i + 48, &t3, 16);
    }
    for (; i < n; ++i) d[i] = s[i];
}

/* move the run's rows of a slid column down */
#define SLIDE(type, name, slid, to, from_row, count) \
    if (slid) move_down(a->name + (to), a->name + (from_row), (size_t)(count) * sizeof(type));
#define SLIDE_NODES(type, name, code, slid, zeroed) SLIDE(type, name, slid, w, i0, len)
#define SLIDE_EDGES(type, name, code, slid, zeroed) SLIDE(type, name, slid, we, e0, ne)

/* Rows are tested a block at a time: most rows a reclaim sweeps are dead,
 * in long runs (a step's graph), and a block's test has no branch per row. */
#define BLOCK 8

/* The block tests, with SSE2 where it is there (a block is two vectors of
 * visit stamps and four of held pointers), else a loop. */
#if defined(__SSE2__)
static inline __m128i load16(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

/* bit k of the result: the block's stamp k equals live */
static inline uint32_t stamps_hit(const stamp_t *visit, stamp_t live) {
    __m128i s = _mm_set1_epi8((char)live);
    return (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadl_epi64((const __m128i *)(const void *)visit), s)) & 0xffu;
}

/* the OR of the block's held pointers, as a vector */
static inline __m128i held_or(void *const *held) {
    return _mm_or_si128(_mm_or_si128(load16(held), load16(held + 2)),
                        _mm_or_si128(load16(held + 4), load16(held + 6)));
}

static inline int nonzero(__m128i x) {
    return _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_setzero_si128())) != 0xffff;
}
#endif

/* Whether any of the BLOCK rows from visit and held on is live: marked with
 * stamp live, or (with_held) named by a handle. */
static inline int any_live(const stamp_t *visit, void *const *held, stamp_t live, int with_held) {
#if defined(__SSE2__)
    return stamps_hit(visit, live) != 0 || (with_held && nonzero(held_or(held)));
#else
    uintptr_t h = 0;
    uint32_t hit = 0;
    for (int j = 0; j < BLOCK; ++j) {
        hit |= visit[j] == live;
        if (with_held) h |= (uintptr_t)held[j];
    }
    return hit || h;
#endif
}

/* Whether any of the BLOCK rows from held on names a handle. */
static inline int any_held(void *const *held) {
#if defined(__SSE2__)
    return nonzero(held_or(held));
#else
    uintptr_t h = 0;
    for (int j = 0; j < BLOCK; ++j) h |= (uintptr_t)held[j];
    return h != 0;
#endif
}

/* Whether all of the BLOCK rows from visit on are marked with stamp live. */
static inline int all_live(const stamp_t *visit, stamp_t live) {
#if defined(__SSE2__)
    return stamps_hit(visit, live) == 0xffu;
#else
    uint32_t hit = 1;
    for (int j = 0; j < BLOCK; ++j) hit &= visit[j] == live;
    return hit;
#endif
}

/* A live row (held, or a child of a live one) marks its children live. The
 * columns come as arguments, read once by the caller. */
static inline void mark(stamp_t *visit, void *const *held, const edge_t *start, const node_t *child,
                        int64_t i, stamp_t live) {
    if (visit[i] != live) {
        if (!held[i]) return;
        visit[i] = live;
    }
    int64_t e = start[i], end = start[i + 1];
    if (end - e == 2) {  /* an add or a multiply, most nodes: no loop to set up */
        visit[child[e]] = live;
        visit[child[e + 1]] = live;
        return;
    }
    for (; e < end; ++e)
        visit[child[e]] = live;
}

/* The run [i0, ..)'s n children, from src down to dst (dst <= src), renumbered:
 * a child at i0 or above is in the run (it lies below its parent) and moves
 * down by down; one below stayed where it was (below m0, the first row moved:
 * a parameter, most often) or is in an earlier run, at k[c] (renumbered
 * already). Four at a time where SSE2 is there and none is in an earlier run. */
static inline node_t renumbered(node_t c, int64_t i0, node_t down, int64_t m0, const node_t *k) {
    return c >= i0 ? c - down : c >= m0 ? k[c] : c;
}

static void renumber(node_t *dst, const node_t *src, int64_t n, int64_t i0, node_t down,
                     int64_t m0, const node_t *k) {
    int64_t j = 0;
#if defined(__SSE2__)
    const __m128i first = _mm_set1_epi32((int32_t)i0), moved = _mm_set1_epi32((int32_t)m0),
                  by = _mm_set1_epi32(down);
    for (; j + 4 <= n; j += 4) {
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + j));
        __m128i below_run = _mm_cmplt_epi32(c, first);
        if (_mm_movemask_epi8(_mm_andnot_si128(_mm_cmplt_epi32(c, moved), below_run)) == 0)
            _mm_storeu_si128((__m128i *)(void *)(dst + j), _mm_sub_epi32(c, _mm_andnot_si128(below_run, by)));
        else  /* in order: dst[q] overwrites nothing past src[q] */
            for (int64_t q = j; q < j + 4; ++q) dst[q] = renumbered(src[q], i0, down, m0, k);
    }
#endif
    for (; j < n; ++j) dst[j] = renumbered(src[j], i0, down, m0, k);
}

int64_t arena_next_held(const arena_t *a, int64_t i) {
    void *const *held = a->held;
    int64_t n = a->n_nodes;
    while (i + BLOCK <= n && !any_held(held + i)) i += BLOCK;
    while (i < n && !held[i]) ++i;
    return i;
}

int64_t arena_pop(arena_t *a, int64_t floor, int64_t least) {
    int64_t n = a->n_nodes, i = n;
    void *const *held = a->held;
    /* a drop needs the rows [n - least, n) all unnamed: where the lowest is named
     * (a kept node just below a few throwaways), no scan; else a block at a time,
     * so that a run of small throwaways on top, each its own failed drop, costs
     * each a few block tests rather than a row-by-row pass over the run */
    if (n - floor < least || held[n - least] != NULL) return 0;
    while (i - BLOCK >= floor && !any_held(held + i - BLOCK)) i -= BLOCK;
    while (i > floor && held[i - 1] == NULL) --i;
    if (n - i < least) return 0;
    arena_clear_rows(a, i, n, 0);
    a->n_nodes = i;
    a->n_edges = a->child_start[i];
    return n - i;
}

int64_t arena_reclaim(arena_t *a, int64_t from, int64_t *moved) {
    int64_t n = a->n_nodes;
    if (from < 0) from = 0;
    *moved = n;
    if (from >= n) return 0;
    node_t *child = a->child;
    edge_t *start = a->child_start;
    stamp_t *visit = a->visit;
    void **held = a->held;
    /* mark: a live node makes its children live (they lie below it); a live
     * node's visit column gets a fresh stamp (a backward's scratch, free now;
     * children below from are stamped too, harmlessly: only rows from on are read) */
    stamp_t live = arena_stamp(a);
    int64_t i = n - 1;
    for (; i - (BLOCK - 1) >= from; i -= BLOCK) {  /* a block of rows i - BLOCK + 1 .. i */
        if (!any_live(visit + i - (BLOCK - 1), held + i - (BLOCK - 1), live, 1)) continue;
        for (int64_t r = i; r > i - BLOCK; --r) mark(visit, held, start, child, r, live);
    }
    for (; i >= from; --i) mark(visit, held, start, child, i, live);

    /* The live nodes below the first reclaimed one stay where they are. k[i]:
     * live node i's new row, for the rows above (the backward's topo scratch;
     * only live rows are written, and only live rows are read: a live node's
     * children are live). */
    node_t *k = a->topo;
    i = from;
    while (i + BLOCK <= n && all_live(visit + i, live)) i += BLOCK;
    while (i < n && visit[i] == live) ++i;
    *moved = i;

    /* slide, a run of consecutive live nodes [i0, i1) at a time: its rows move
     * down to w, its edges down to we (moves, as blocks), its children are
     * renumbered. Rows and edges only move down, and each run's bounds are read
     * before the rows below them are written. */
    int64_t w = i, we = start[i];
    while (i < n) {
        while (i + BLOCK <= n && !any_live(visit + i, held + i, live, 0)) i += BLOCK;
        while (i < n && visit[i] != live) ++i;
        if (i == n) break;
        int64_t i0 = i;
        while (i + BLOCK <= n && all_live(visit + i, live)) i += BLOCK;
        while (i < n && visit[i] == live) ++i;
        int64_t len = i - i0, e0 = start[i0], ne = start[i] - e0, shift = e0 - we, down = i0 - w;
        for (int64_t j = 0; j < len; ++j) k[i0 + j] = (node_t)(w + j);
        renumber(child + we, child + e0, ne, i0, (node_t)down, *moved, k);
        ARENA_EDGE_COLUMNS(SLIDE_EDGES)
        for (int64_t j = 1; j <= len; ++j) start[w + j] = start[i0 + j] - shift;
        ARENA_NODE_COLUMNS(SLIDE_NODES)
        w += len;
        we += ne;
    }
    int64_t freed = n - w;
    arena_clear_rows(a, w, n, 0);
    a->n_nodes = w;
    a->n_edges = we;
    a->cur_epoch++;
    return freed;
}

