/*
 * ckbn_kernels.h -- the C-level table of ckbn's compiled kernels.
 *
 * Every compiled kernel module (ckbn._kernels_base, _avx2, _avx512) exports
 * one `ckbn_kernel_table` in a PyCapsule named CKBN_TABLE_CAPSULE, as the
 * module attribute `kernel_table`; `ckbn.kernel_table()` returns the capsule
 * of the variant the run-time dispatch chose.  Native framework ops (the
 * TensorFlow op library, the XLA FFI handler of keras_plugin) call the
 * kernels through this table: no Python, no GIL, no copy, and the kernels
 * are compiled once, in ckbn.  `ckbn.get_include()` is the folder of this
 * header.
 *
 * Data.  A tensor is described by its canonical layout (P, G, R, C): a flat
 * C-contiguous block whose element (p, g, r, c) sits at
 * ((p*G + g)*R + r)*C + c.  Statistics are kept per channel (g, c), that is
 * n = G*C channels in the order g*C + c, and reduced over p and r (count
 * P*R).  ckbn_layout() below maps a shape and its channel axes onto it.
 * Data pointers are of the type `dtype` names (float16 as uint16 bits);
 * per-channel arrays are always float64, of length n.  Outputs may alias
 * their input of the same size (y == x, dx == dy), never a per-channel input.
 *
 * Activation.  With act != NULL and act->on, the forward returns act(z),
 * applied in the normalization pass, and the backward takes dy as the
 * gradient of act(z) (z is recomputed from x, so the forward's z is never
 * stored).  act->kind says which: CKBN_ACT_PIECEWISE, act(z) = z if
 * 0 < z < hi; hi if z >= hi; slope*z if z <= 0; CKBN_ACT_SWISH, act(z) =
 * z * sigmoid(z) (slope and hi unused).
 *
 * Threads.  Each call runs on at most n_threads OpenMP threads (n_threads
 * >= 1; small tensors use one).  Results are bitwise identical for every
 * n_threads.
 *
 * Status.  Every function returns CKBN_OK (0) or an error code; on error no
 * output holds a meaningful value.
 */
#ifndef CKBN_KERNELS_H
#define CKBN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any change to the table below; users check `abi` first.
   2: ckbn_act gained `kind` (in what was padding after `on`). */
#define CKBN_TABLE_ABI 2
#define CKBN_TABLE_CAPSULE "ckbn.kernel_table.v1"

enum ckbn_dtype { CKBN_FLOAT16 = 0, CKBN_FLOAT32 = 1, CKBN_FLOAT64 = 2 };

enum ckbn_status {
    CKBN_OK = 0,
    CKBN_ERR_NOMEM = 1,   /* a scratch allocation failed */
    CKBN_ERR_ARG = 2,     /* bad dims (negative, or an empty reduction) */
    CKBN_ERR_DTYPE = 3    /* dtype unknown, or float16 without F16C */
};

typedef struct ckbn_dims { ptrdiff_t P, G, R, C; } ckbn_dims;

enum ckbn_act_kind { CKBN_ACT_PIECEWISE = 0, CKBN_ACT_SWISH = 1 };

typedef struct ckbn_act {
    int on;          /* 0: identity (kind, slope and hi ignored) */
    int kind;        /* enum ckbn_act_kind */
    double slope;    /* 0 for ReLU/ReLU6 */
    double hi;       /* INFINITY for ReLU, 6 for ReLU6 */
} ckbn_act;

typedef struct ckbn_kernel_table {
    int abi;                 /* CKBN_TABLE_ABI */
    const char *variant;     /* "base", "avx2" or "avx512" */
    int has_float16;         /* whether CKBN_FLOAT16 data is accepted */

    /* Training forward: the batch mean and biased variance of x, and
       y = act((x - mean) * scale / sqrt(var + eps) + offset). */
    int (*forward_train)(int dtype, const void *x, ckbn_dims d,
                         const double *scale, const double *offset, double eps,
                         const ckbn_act *act,
                         void *y, double *mean, double *var, int n_threads);

    /* Forward with given statistics (inference, or synchronized training
       with the global statistics): y = act((x - mean) * scale /
       sqrt(var + eps) + offset). */
    int (*forward_infer)(int dtype, const void *x, ckbn_dims d,
                         const double *scale, const double *offset,
                         const double *mean, const double *var, double eps,
                         const ckbn_act *act, void *y, int n_threads);

    /* Gradients of either forward.  training != 0: mean and var are x's
       batch statistics; else they are constants.  dscale = sum(e * xhat),
       doffset = sum(e), e = dy (or dy * act'(z)).  offset is read only with
       an activation (may be NULL without). */
    int (*backward)(int dtype, const void *dy, const void *x, ckbn_dims d,
                    const double *scale, const double *offset,
                    const double *mean, const double *var, double eps,
                    int training, const ckbn_act *act,
                    void *dx, double *dscale, double *doffset, int n_threads);

    /* Synchronized training, in three steps around the caller's
       collectives: stats (local, biased), then forward_infer with the
       merged statistics; grad_sums (local), then backward_dx with the
       summed sums and the global count. */
    int (*stats)(int dtype, const void *x, ckbn_dims d,
                 double *mean, double *var, int n_threads);

    /* sum_e = sum(e), sum_exc = sum(e * (x - mean)); scale, offset, var and
       eps are read only with an activation (may be NULL without). */
    int (*grad_sums)(int dtype, const void *dy, const void *x, ckbn_dims d,
                     const double *scale, const double *offset,
                     const double *mean, const double *var, double eps,
                     const ckbn_act *act,
                     double *sum_e, double *sum_exc, int n_threads);

    /* Training dx from (global) sums over `count` elements per channel:
       dx = scale*inv*(e - sum_e/count - xhat*inv*sum_exc/count).  dscale
       (may be NULL) receives sum_exc * inv. */
    int (*backward_dx)(int dtype, const void *dy, const void *x, ckbn_dims d,
                       const double *scale, const double *offset,
                       const double *mean, const double *var, double eps,
                       double count, const double *sum_e, const double *sum_exc,
                       const ckbn_act *act, void *dx, double *dscale, int n_threads);
} ckbn_kernel_table;

/* Canonical dims of an array of `ndim` dims `shape` whose channel axes are
   the set bits of `channel_mask` (bit i: axis i, non-negative).  Returns 0
   and fills *d when the array maps onto (P, G, R, C) as it is (channel axes
   in at most two runs of consecutive axes, the second ending at the last
   axis); returns -1 when the channel axes must first be moved to the end (a
   copy).  ckbn's own Layout (ckbn/_layout.py) calls this same function. */
static inline int ckbn_layout(int ndim, const int64_t *shape, uint64_t channel_mask,
                              ckbn_dims *d)
{
    int run_lo[2] = {0, 0}, run_hi[2] = {0, 0}, runs = 0, i;
    int64_t p = 1, g = 1, r = 1, c = 1;
    for (i = 0; i < ndim; i++) {
        if (!((channel_mask >> i) & 1u))
            continue;
        if (runs > 0 && run_hi[runs - 1] == i) {
            run_hi[runs - 1] = i + 1;
        } else {
            if (runs == 2)
                return -1;
            run_lo[runs] = i;
            run_hi[runs] = i + 1;
            runs++;
        }
    }
    if (runs == 2 && run_hi[1] != ndim)
        return -1;
    for (i = 0; i < ndim; i++) {
        int64_t n = shape[i];
        if (runs == 0)
            p *= n;
        else if (i < run_lo[0])
            p *= n;
        else if (i < run_hi[0])
            (runs == 1 && run_hi[0] == ndim) ? (c *= n) : (g *= n);
        else if (runs == 1 || i < run_lo[1])
            r *= n;
        else
            c *= n;
    }
    d->P = (ptrdiff_t) p;
    d->G = (ptrdiff_t) g;
    d->R = (ptrdiff_t) r;
    d->C = (ptrdiff_t) c;
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* CKBN_KERNELS_H */
