/* arena.c: the columns: growth, release, and the forward half of a replay (reclaiming: reclaim.c). */
#include "arena.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define INITIAL_NODES 1024

#define ROW_BYTES(type, name, code, slid, zeroed) + sizeof(type)

size_t arena_node_bytes(void) {
    return sizeof(edge_t) ARENA_NODE_COLUMNS(ROW_BYTES);  /* child_start, then every node column */
}

size_t arena_edge_bytes(void) {
    return 0 ARENA_EDGE_COLUMNS(ROW_BYTES);
}

int arena_init(arena_t *a) {
    memset(a, 0, sizeof *a);
    a->cur_epoch = 1;
    a->cur_visit = 0;
    if (arena_grow_nodes(a, INITIAL_NODES) || arena_grow_edges(a, 2 * INITIAL_NODES)) {
        arena_free(a);
        return OP_NOMEM;
    }
    a->child_start[0] = 0;
    return OP_OK;
}

void arena_free(arena_t *a) {
#define FREE(type, name, code, slid, zeroed) free(a->name);
    ARENA_NODE_COLUMNS(FREE)
    ARENA_EDGE_COLUMNS(FREE)
#undef FREE
    free(a->child_start);
    memset(a, 0, sizeof *a);
}

/* Zero n bytes from p in a plain loop, 64 bytes a turn (vector stores), not
 * memset: glibc clears a large block with `rep stosb`, which callgrind (the
 * benchmarks' instruction counts) counts a byte at a time; the clock sees no
 * difference. ARENA_NOT_MEMSET keeps gcc from turning the loop back into memset. */
static ARENA_NOT_MEMSET void zero(void *p, size_t n) {
    unsigned char *q = p;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 64; ++k) q[i + k] = 0;
    for (; i < n; ++i) q[i] = 0;
}

/* realloc one column from old to cap rows of size bytes, the new rows zeroed
 * if asked; on failure the old block stays valid */
static int grow(void **p, int64_t old, int64_t cap, size_t size, int zeroed) {
    char *q = realloc(*p, (size_t)cap * size);
    if (q == NULL) return 1;
    if (zeroed) zero(q + (size_t)old * size, (size_t)(cap - old) * size);
    *p = q;
    return 0;
}

/* grow a->name to cap rows (every column of the table, in turn) */
#define GROW_NODES(type, name, code, slid, zeroed) \
    || grow((void **)&a->name, a->cap_nodes, cap, sizeof(type), zeroed)
#define GROW_EDGES(type, name, code, slid, zeroed) \
    || grow((void **)&a->name, a->cap_edges, cap, sizeof(type), zeroed)

/* Double the node columns until need fits. Every column is grown before the
 * capacity is raised, so a failure leaves the arena consistent. */
int arena_grow_nodes(arena_t *a, int64_t need) {
    int64_t cap = a->cap_nodes ? a->cap_nodes : INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (cap > (int64_t)INT32_MAX) {
        if (need > (int64_t)INT32_MAX) return OP_TOO_LARGE;
        cap = INT32_MAX;
    }
    if (grow((void **)&a->child_start, a->cap_nodes, cap + 1, sizeof(edge_t), 0)
        ARENA_NODE_COLUMNS(GROW_NODES))
        return OP_NOMEM;
    a->cap_nodes = cap;
    return OP_OK;
}

int arena_grow_edges(arena_t *a, int64_t need) {
    int64_t cap = a->cap_edges ? a->cap_edges : 2 * INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (cap > (int64_t)UINT32_MAX) {  /* child_start holds edge indices in 32 bits (edge_t) */
        if (need > (int64_t)UINT32_MAX) return OP_TOO_LARGE;
        cap = UINT32_MAX;
    }
    if (0 ARENA_EDGE_COLUMNS(GROW_EDGES))
        return OP_NOMEM;
    a->cap_edges = cap;
    return OP_OK;
}

void arena_clear_stamps(arena_t *a) {
    zero(a->visit, (size_t)a->cap_nodes * sizeof *a->visit);
}

/* The rows of [from, to) in column k that hold an OP_POW's or an OP_CUSTOM's
 * number (zeroed 2) back to 0: the op bytes are read 16 at a time, and only
 * those rows written (a step's graph is some 5% powers). */
static void clear_sparse(double *k, const uint8_t *op, int64_t from, int64_t to) {
    int64_t i = from;
#if defined(__SSE2__) && defined(__GNUC__)
    const __m128i pw = _mm_set1_epi8(OP_POW), custom = _mm_set1_epi8(OP_CUSTOM);
    for (; i + 16 <= to; i += 16) {
        __m128i o = _mm_loadu_si128((const __m128i *)(const void *)(op + i));
        unsigned hit = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(o, pw), _mm_cmpeq_epi8(o, custom)));
        for (; hit; hit &= hit - 1) k[i + __builtin_ctz(hit)] = 0.0;
    }
#endif
    for (; i < to; ++i)
        if (op[i] == OP_POW || op[i] == OP_CUSTOM) k[i] = 0.0;
}

void arena_clear_rows(arena_t *a, int64_t from, int64_t to, int released) {
#define CLEAR(type, name, code, slid, zeroed) \
    if (zeroed == 2) clear_sparse((double *)(void *)a->name, a->op, from, to); \
    if (zeroed == 3 && released) zero(a->name + from, (size_t)(to - from) * sizeof(type));
    ARENA_NODE_COLUMNS(CLEAR)
#undef CLEAR
}

void arena_release(arena_t *a, int64_t mark) {
    if (mark < 0 || mark >= a->n_nodes) return;
    arena_clear_rows(a, mark, a->n_nodes, 1);
    a->n_nodes = mark;
    a->n_edges = a->child_start[mark];
    /* every handle made before now fails the epoch check if its index is >= mark */
    a->cur_epoch++;
}

status_t arena_replay(arena_t *a, int64_t from, int *custom) {
    double *d = a->data;
    const node_t *child = a->child;
    double x[2];
    *custom = 0;
    for (int64_t i = from < 0 ? 0 : from; i < a->n_nodes; ++i) {
        int64_t e = a->child_start[i], n = a->child_start[i + 1] - e;
        int op = a->op[i];
        if (op == OP_CUSTOM || op == OP_DOT) { *custom = 1; return OP_OK; }  /* (a compact sum: arena.h) */
        for (int64_t j = 0; j < n && j < 2; ++j) x[j] = d[child[e + j]];
        status_t s = op_apply(op, x, a->operand[i], a->operand[i] - 1.0, &d[i], &a->local_grad[e]);
        if (s != OP_OK) return s;
        arena_tag(a, i, op, (a->tag[i] & TAG_K_INT) != 0);
        a->grad[i] = 0.0;
        a->tag[i] |= TAG_GRAD_INT;
    }
    return OP_OK;
}

int arena_column(const arena_t *a, const char *name, const void **rows, int64_t *n, char *code, size_t *size) {
#define FIND(type, column, typecode, slid, zeroed, count) \
    if (typecode && strcmp(name, #column) == 0) { \
        *rows = a->column; *n = count; *code = (char)typecode; *size = sizeof(type); return 1; \
    }
#define FIND_NODE(type, column, typecode, slid, zeroed) FIND(type, column, typecode, slid, zeroed, a->n_nodes)
#define FIND_EDGE(type, column, typecode, slid, zeroed) FIND(type, column, typecode, slid, zeroed, a->n_edges)
    ARENA_NODE_COLUMNS(FIND_NODE)
    ARENA_EDGE_COLUMNS(FIND_EDGE)
    FIND(edge_t, child_start, 'I', 0, 0, a->n_nodes + 1)
    return 0;
}

const char *arena_column_names(void) {
#define NAME(type, name, code, slid, zeroed) #name ", "
    return ARENA_NODE_COLUMNS(NAME) ARENA_EDGE_COLUMNS(NAME) "child_start";
}
