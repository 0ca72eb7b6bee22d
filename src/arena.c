/* arena.c: growth, release, the reference-order backward and Adam. */
#include "arena.h"

#include <string.h>

#define INITIAL_NODES 1024

int arena_init(arena_t *a) {
    memset(a, 0, sizeof *a);
    a->cur_epoch = 1;
    a->cur_visit = 0;
    if (arena_grow_nodes(a, INITIAL_NODES) || arena_grow_edges(a, 2 * INITIAL_NODES)) {
        arena_free(a);
        return ARENA_NOMEM;
    }
    a->child_start[0] = 0;
    return ARENA_OK;
}

void arena_free(arena_t *a) {
    free(a->data); free(a->grad); free(a->operand); free(a->op); free(a->epoch);
    free(a->visit); free(a->child_start); free(a->child); free(a->local_grad);
    free(a->topo); free(a->stack_node); free(a->stack_edge);
    memset(a, 0, sizeof *a);
}

/* realloc one column to cap elements; on failure the old block stays valid */
static int grow(void **p, int64_t cap, size_t size) {
    void *q = realloc(*p, (size_t)cap * size);
    if (q == NULL) return 1;
    *p = q;
    return 0;
}

/* Double the node columns until need fits. Every column is grown before the
 * capacity is raised, so a failure leaves the arena consistent. */
int arena_grow_nodes(arena_t *a, int64_t need) {
    int64_t cap = a->cap_nodes ? a->cap_nodes : INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (cap > (int64_t)INT32_MAX) {
        if (need > (int64_t)INT32_MAX) return ARENA_TOO_LARGE;
        cap = INT32_MAX;
    }
    if (grow((void **)&a->data, cap, sizeof(double)) ||
        grow((void **)&a->grad, cap, sizeof(double)) ||
        grow((void **)&a->operand, cap, sizeof(double)) ||
        grow((void **)&a->op, cap, sizeof(uint8_t)) ||
        grow((void **)&a->epoch, cap, sizeof(epoch_t)) ||
        grow((void **)&a->child_start, cap + 1, sizeof(int64_t)) ||
        grow((void **)&a->topo, cap, sizeof(node_t)) ||
        grow((void **)&a->stack_node, cap, sizeof(node_t)) ||
        grow((void **)&a->stack_edge, cap, sizeof(int64_t)))
        return ARENA_NOMEM;
    /* a new visit column starts unvisited */
    uint32_t *visit = realloc(a->visit, (size_t)cap * sizeof(uint32_t));
    if (visit == NULL) return ARENA_NOMEM;
    memset(visit + a->cap_nodes, 0, (size_t)(cap - a->cap_nodes) * sizeof(uint32_t));
    a->visit = visit;
    a->cap_nodes = cap;
    return ARENA_OK;
}

int arena_grow_edges(arena_t *a, int64_t need) {
    int64_t cap = a->cap_edges ? a->cap_edges : 2 * INITIAL_NODES;
    while (cap < need) cap *= 2;
    if (grow((void **)&a->child, cap, sizeof(node_t)) ||
        grow((void **)&a->local_grad, cap, sizeof(double)))
        return ARENA_NOMEM;
    a->cap_edges = cap;
    return ARENA_OK;
}

void arena_release(arena_t *a, int64_t mark) {
    if (mark < 0 || mark >= a->n_nodes) return;
    a->n_nodes = mark;
    a->n_edges = a->child_start[mark];
    /* every handle made before now fails the epoch check if its index is >= mark */
    a->cur_epoch++;
}

status_t arena_pow(double x, double k, double *out) {
    /* Python's float ** answers an infinite or nan operand before anything
     * else, with the values C99's pow gives (Annex F), and never raises */
    if (!isfinite(x) || !isfinite(k)) {
        *out = pow(x, k);
        return ARENA_OK;
    }
    if (x == 0.0 && k < 0.0) return ARENA_ZERODIV;
    if (x < 0.0 && k != floor(k)) return ARENA_DOMAIN;  /* would be complex */
    double r = pow(x, k);
    if (isinf(r) && isfinite(x) && isfinite(k)) return ARENA_RANGE;
    *out = r;
    return ARENA_OK;
}

/* Depth-first post-order from root, children in order, each node once: the
 * reference's recursive build_topo with an explicit stack. A frame is
 * (node, next edge); a node is marked when pushed, as the recursion marks it
 * on entry. */
int64_t arena_topo(arena_t *a, node_t root) {
    assert(root >= 0 && root < a->n_nodes);
    uint32_t stamp = ++a->cur_visit;
    if (stamp == 0) {  /* wrapped: clear old stamps once every 2^32 walks */
        memset(a->visit, 0, (size_t)a->cap_nodes * sizeof(uint32_t));
        stamp = a->cur_visit = 1;
    }
    const int64_t *start = a->child_start;
    const node_t *child = a->child;
    uint32_t *visit = a->visit;
    node_t *topo = a->topo, *snode = a->stack_node;
    int64_t *sedge = a->stack_edge;
    int64_t n = 0, top = 0;

    /* v is the node being scanned, its next edge e of [.., end); the stack
     * holds the ancestors being scanned, each with the edge to resume at */
    node_t v = root;
    int64_t e = start[root], end = start[root + 1];
    visit[root] = stamp;
    for (;;) {
        while (e < end) {
            node_t c = child[e++];
            assert(c >= 0 && c < v);  /* children come before their parent */
            if (visit[c] == stamp) continue;
            visit[c] = stamp;
            int64_t c_start = start[c], c_end = start[c + 1];
            if (c_start == c_end) {  /* a leaf: its push and pop would put it right here */
                topo[n++] = c;
                continue;
            }
            snode[top] = v;  /* descend into c; come back to v's edge e */
            sedge[top] = e;
            ++top;
            v = c;
            e = c_start;
            end = c_end;
        }
        topo[n++] = v;  /* every child done: post-order */
        if (top == 0) break;
        --top;
        v = snode[top];
        e = sedge[top];
        end = start[v + 1];
    }
    return n;
}

int64_t arena_backward(arena_t *a, node_t root) {
    int64_t n = arena_topo(a, root);
    const int64_t *start = a->child_start;
    const node_t *child = a->child;
    const double *lg = a->local_grad;
    double *grad = a->grad;
    const node_t *topo = a->topo;

    grad[root] = 1.0;
    for (int64_t t = n - 1; t >= 0; --t) {
        node_t v = topo[t];
        double gv = grad[v];
        for (int64_t e = start[v]; e < start[v + 1]; ++e)
            grad[child[e]] += lg[e] * gv;
    }
    return n;
}

void arena_backward_by_index(arena_t *a, node_t root) {
    assert(root >= 0 && root < a->n_nodes);
    const int64_t *start = a->child_start;
    const node_t *child = a->child;
    const double *lg = a->local_grad;
    double *grad = a->grad;

    grad[root] = 1.0;
    for (int64_t v = root; v >= 0; --v) {
        double gv = grad[v];
        for (int64_t e = start[v]; e < start[v + 1]; ++e)
            grad[child[e]] += lg[e] * gv;
    }
}

status_t arena_replay(arena_t *a, int64_t from) {
    double *d = a->data, *lg = a->local_grad;
    const node_t *child = a->child;
    for (int64_t i = from < 0 ? 0 : from; i < a->n_nodes; ++i) {
        int64_t e = a->child_start[i];
        double x = a->child_start[i + 1] > e ? d[child[e]] : 0.0, y, out, g;
        status_t s;
        switch ((op_t)a->op[i]) {
        case OP_LEAF:
        case OP_CONST:
            break;
        case OP_ADD:
            d[i] = x + d[child[e + 1]];
            lg[e] = 1.0;
            lg[e + 1] = 1.0;
            break;
        case OP_MUL:
            y = d[child[e + 1]];
            d[i] = x * y;
            lg[e] = y;
            lg[e + 1] = x;
            break;
        case OP_POW:
            if ((s = arena_pow(x, a->operand[i], &out)) != ARENA_OK) return s;
            if ((s = arena_pow(x, a->operand[i] - 1, &g)) != ARENA_OK) return s;
            d[i] = out;
            lg[e] = a->operand[i] * g;
            break;
        case OP_LOG:
            if (!(x > 0.0) && !isnan(x)) return ARENA_DOMAIN;
            d[i] = log(x);
            lg[e] = 1.0 / x;
            break;
        case OP_EXP:
            out = exp(x);
            if (isinf(out) && isfinite(x)) return ARENA_RANGE;
            d[i] = out;
            lg[e] = out;
            break;
        case OP_RELU:
            d[i] = x > 0 ? x : 0.0;
            lg[e] = x > 0 ? 1.0 : 0.0;
            break;
        default:
            break;
        }
        a->grad[i] = 0.0;
    }
    return ARENA_OK;
}

int64_t arena_adam(arena_t *a, const node_t *idx, int64_t n, double *m, double *v,
                   double lr_t, double beta1, double beta2, double eps, int64_t step,
                   status_t *status) {
    double *data = a->data, *grad = a->grad;
    /* The same expressions as the reference, evaluated in the same order.
     * pow(g, 2.0) must stay a call to pow (setup.py builds with -fno-builtin-pow):
     * Python's g ** 2 calls pow, and pow is not always correctly rounded. */
    double bias1 = 1 - pow(beta1, (double)step + 1.0);  /* = step + 1 exactly below 2**53 */
    double bias2 = 1 - pow(beta2, (double)step + 1.0);
    *status = ARENA_OK;
    for (int64_t i = 0; i < n; ++i) {
        node_t p = idx[i];
        assert(p >= 0 && p < a->n_nodes);
        double g = grad[p];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        double g2 = pow(g, 2.0);
        /* where Python's arithmetic raises, stop at the same point it would */
        if (isinf(g2) && isfinite(g)) { *status = ARENA_RANGE; return i; }
        v[i] = beta2 * v[i] + (1 - beta2) * g2;
        if (bias1 == 0.0 || bias2 == 0.0) { *status = ARENA_ZERODIV; return i; }
        double m_hat = m[i] / bias1;
        double v_hat = v[i] / bias2;
        double denom = pow(v_hat, 0.5) + eps;
        if (denom == 0.0) { *status = ARENA_ZERODIV; return i; }
        data[p] -= lr_t * m_hat / denom;
        grad[p] = 0.0;
    }
    return n;
}
