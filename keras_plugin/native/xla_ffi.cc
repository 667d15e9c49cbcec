// xla_ffi.cc -- XLA FFI handlers that run ckbn's kernels inside jax.jit.
//
// Each handler reads XLA's buffers in place and writes the outputs XLA
// allocated, through the C-level kernel table of ckbn (ckbn_kernels.h): no
// Python, no GIL, no copy of the data.  Only the per-channel arrays (scale,
// offset, statistics: n = G*C values) are widened to or rounded from float64
// in small buffers when they are float32, because the table keeps them in
// float64.
//
// The layout (P, G, R, C) of the data is computed on the Python side at trace
// time (keras_plugin/_jax_ffi.py, from static shapes with ckbn's make_layout)
// and passed as attributes; each handler checks it against the buffers it
// gets.  The activation is three attributes (act, slope, hi), the OpenMP
// thread count one more (n_threads).
//
// The table is handed over once, after loading, by ckbn_native_set_table();
// handlers called before that return an error.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ckbn_kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

const ckbn_kernel_table *g_table = nullptr;

// Attributes shared by every handler.
struct Common {
  ckbn_dims d;
  double eps;
  ckbn_act act;
  int n_threads;
};

ffi::Error status_error(int status, const char *what) {
  switch (status) {
    case CKBN_OK:
      return ffi::Error::Success();
    case CKBN_ERR_NOMEM:
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string(what) + ": out of memory for scratch buffers");
    case CKBN_ERR_ARG:
      return ffi::Error::InvalidArgument(
          std::string(what) + ": bad dimensions (negative, or an empty reduction)");
    case CKBN_ERR_DTYPE:
      return ffi::Error::InvalidArgument(
          std::string(what) + ": data type not supported by these kernels");
    default:
      return ffi::Error::Internal(std::string(what) + ": kernel status " +
                                  std::to_string(status));
  }
}

// The table's dtype code for data buffers, or -1.
int data_dtype(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F16:
      return CKBN_FLOAT16;
    case ffi::DataType::F32:
      return CKBN_FLOAT32;
    case ffi::DataType::F64:
      return CKBN_FLOAT64;
    default:
      return -1;
  }
}

// Checks the table, the attributes and the data buffer; fills c.
ffi::Error make_common(const char *what, const ffi::AnyBuffer &x, int64_t P, int64_t G,
                       int64_t R, int64_t C, double eps, int64_t act, double slope,
                       double hi, int64_t n_threads, Common *c, int *dtype) {
  if (g_table == nullptr)
    return ffi::Error::Internal(std::string(what) + ": the ckbn kernel table is not set");
  *dtype = data_dtype(x.element_type());
  if (*dtype < 0)
    return ffi::Error::InvalidArgument(std::string(what) +
                                       ": data must be float16, float32 or float64");
  if (*dtype == CKBN_FLOAT16 && !g_table->has_float16)
    return ffi::Error::InvalidArgument(std::string(what) +
                                       ": these kernels have no float16 support");
  if (P < 0 || G < 0 || R < 0 || C < 0 ||
      static_cast<int64_t>(x.element_count()) != P * G * R * C)
    return ffi::Error::InvalidArgument(
        std::string(what) + ": layout (" + std::to_string(P) + ", " + std::to_string(G) +
        ", " + std::to_string(R) + ", " + std::to_string(C) + ") does not match " +
        std::to_string(x.element_count()) + " elements");
  if (n_threads < 1)
    return ffi::Error::InvalidArgument(std::string(what) + ": n_threads must be >= 1");
  c->d = ckbn_dims{static_cast<ptrdiff_t>(P), static_cast<ptrdiff_t>(G),
                   static_cast<ptrdiff_t>(R), static_cast<ptrdiff_t>(C)};
  c->eps = eps;
  c->act = ckbn_act{act != 0, slope, hi};
  c->n_threads = static_cast<int>(n_threads);
  return ffi::Error::Success();
}

// A per-channel input as float64: the buffer itself when it is float64, else
// a widened copy in `store`.
ffi::Error channel_in(const char *what, const char *name, const ffi::AnyBuffer &b, int64_t n,
                      std::vector<double> *store, const double **out) {
  if (static_cast<int64_t>(b.element_count()) != n)
    return ffi::Error::InvalidArgument(std::string(what) + ": " + name + " has " +
                                       std::to_string(b.element_count()) +
                                       " values, expected " + std::to_string(n));
  switch (b.element_type()) {
    case ffi::DataType::F64:
      *out = b.typed_data<double>();
      return ffi::Error::Success();
    case ffi::DataType::F32: {
      const float *src = b.typed_data<float>();
      store->resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) (*store)[i] = static_cast<double>(src[i]);
      *out = store->data();
      return ffi::Error::Success();
    }
    default:
      return ffi::Error::InvalidArgument(std::string(what) + ": " + name +
                                         " must be float32 or float64");
  }
}

// A per-channel output: written in float64 to the buffer itself, or to
// `store` and rounded by channel_out_done().
ffi::Error channel_out(const char *what, const char *name, ffi::AnyBuffer b, int64_t n,
                       std::vector<double> *store, double **out) {
  if (static_cast<int64_t>(b.element_count()) != n)
    return ffi::Error::InvalidArgument(std::string(what) + ": " + name + " has " +
                                       std::to_string(b.element_count()) +
                                       " values, expected " + std::to_string(n));
  switch (b.element_type()) {
    case ffi::DataType::F64:
      *out = b.typed_data<double>();
      return ffi::Error::Success();
    case ffi::DataType::F32:
      store->resize(static_cast<size_t>(n));
      *out = store->data();
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument(std::string(what) + ": " + name +
                                         " must be float32 or float64");
  }
}

void channel_out_done(ffi::AnyBuffer b, const std::vector<double> &store) {
  if (b.element_type() != ffi::DataType::F32) return;
  float *dst = b.typed_data<float>();
  for (size_t i = 0; i < store.size(); ++i) dst[i] = static_cast<float>(store[i]);
}

ffi::Error same_data(const char *what, const char *name, const ffi::AnyBuffer &a,
                     const ffi::AnyBuffer &x) {
  if (a.element_type() != x.element_type() || a.element_count() != x.element_count())
    return ffi::Error::InvalidArgument(std::string(what) + ": " + name +
                                       " must have x's dtype and size");
  return ffi::Error::Success();
}

#define CKBN_TRY(expr)                      \
  do {                                      \
    ffi::Error err_ = (expr);               \
    if (err_.failure()) return err_;        \
  } while (0)

#define CKBN_COMMON_ATTRS                                                      \
  .Attr<int64_t>("P").Attr<int64_t>("G").Attr<int64_t>("R").Attr<int64_t>("C") \
      .Attr<double>("eps").Attr<int64_t>("act").Attr<double>("slope")          \
      .Attr<double>("hi").Attr<int64_t>("n_threads")

// ------------------------------------------------------------ training forward
ffi::Error TrainImpl(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer offset,
                     ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                     ffi::Result<ffi::AnyBuffer> var, int64_t P, int64_t G, int64_t R,
                     int64_t C, double eps, int64_t act, double slope, double hi,
                     int64_t n_threads) {
  const char *what = "ckbn_bn_train";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, eps, act, slope, hi, n_threads, &c, &dt));
  CKBN_TRY(same_data(what, "y", *y, x));
  const int64_t n = G * C;
  std::vector<double> s_s, s_o, s_m, s_v;
  const double *ps, *po;
  double *pm, *pv;
  CKBN_TRY(channel_in(what, "scale", scale, n, &s_s, &ps));
  CKBN_TRY(channel_in(what, "offset", offset, n, &s_o, &po));
  CKBN_TRY(channel_out(what, "mean", *mean, n, &s_m, &pm));
  CKBN_TRY(channel_out(what, "var", *var, n, &s_v, &pv));
  int st = g_table->forward_train(dt, x.untyped_data(), c.d, ps, po, c.eps, &c.act,
                                  y->untyped_data(), pm, pv, c.n_threads);
  CKBN_TRY(status_error(st, what));
  channel_out_done(*mean, s_m);
  channel_out_done(*var, s_v);
  return ffi::Error::Success();
}

// ---------------------------------------------- forward with given statistics
ffi::Error GivenImpl(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer offset,
                     ffi::AnyBuffer mean, ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> y,
                     int64_t P, int64_t G, int64_t R, int64_t C, double eps, int64_t act,
                     double slope, double hi, int64_t n_threads) {
  const char *what = "ckbn_bn_given";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, eps, act, slope, hi, n_threads, &c, &dt));
  CKBN_TRY(same_data(what, "y", *y, x));
  const int64_t n = G * C;
  std::vector<double> s_s, s_o, s_m, s_v;
  const double *ps, *po, *pm, *pv;
  CKBN_TRY(channel_in(what, "scale", scale, n, &s_s, &ps));
  CKBN_TRY(channel_in(what, "offset", offset, n, &s_o, &po));
  CKBN_TRY(channel_in(what, "mean", mean, n, &s_m, &pm));
  CKBN_TRY(channel_in(what, "var", var, n, &s_v, &pv));
  int st = g_table->forward_infer(dt, x.untyped_data(), c.d, ps, po, pm, pv, c.eps, &c.act,
                                  y->untyped_data(), c.n_threads);
  return status_error(st, what);
}

// ---------------------------------------------------------------- backward
ffi::Error GradImpl(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                    ffi::AnyBuffer offset, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                    ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dscale,
                    ffi::Result<ffi::AnyBuffer> doffset, int64_t P, int64_t G, int64_t R,
                    int64_t C, double eps, int64_t act, double slope, double hi,
                    int64_t n_threads, int64_t training) {
  const char *what = "ckbn_bn_grad";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, eps, act, slope, hi, n_threads, &c, &dt));
  CKBN_TRY(same_data(what, "dy", dy, x));
  CKBN_TRY(same_data(what, "dx", *dx, x));
  const int64_t n = G * C;
  std::vector<double> s_s, s_o, s_m, s_v, s_ds, s_do;
  const double *ps, *po, *pm, *pv;
  double *pds, *pdo;
  CKBN_TRY(channel_in(what, "scale", scale, n, &s_s, &ps));
  CKBN_TRY(channel_in(what, "offset", offset, n, &s_o, &po));
  CKBN_TRY(channel_in(what, "mean", mean, n, &s_m, &pm));
  CKBN_TRY(channel_in(what, "var", var, n, &s_v, &pv));
  CKBN_TRY(channel_out(what, "dscale", *dscale, n, &s_ds, &pds));
  CKBN_TRY(channel_out(what, "doffset", *doffset, n, &s_do, &pdo));
  int st = g_table->backward(dt, dy.untyped_data(), x.untyped_data(), c.d, ps, po, pm, pv,
                             c.eps, training != 0, &c.act, dx->untyped_data(), pds, pdo,
                             c.n_threads);
  CKBN_TRY(status_error(st, what));
  channel_out_done(*dscale, s_ds);
  channel_out_done(*doffset, s_do);
  return ffi::Error::Success();
}

// ----------------------------------------------------------------- moments
ffi::Error StatsImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> mean,
                     ffi::Result<ffi::AnyBuffer> var, int64_t P, int64_t G, int64_t R,
                     int64_t C, int64_t n_threads) {
  const char *what = "ckbn_bn_stats";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, 0.0, 0, 0.0, 0.0, n_threads, &c, &dt));
  const int64_t n = G * C;
  std::vector<double> s_m, s_v;
  double *pm, *pv;
  CKBN_TRY(channel_out(what, "mean", *mean, n, &s_m, &pm));
  CKBN_TRY(channel_out(what, "var", *var, n, &s_v, &pv));
  int st = g_table->stats(dt, x.untyped_data(), c.d, pm, pv, c.n_threads);
  CKBN_TRY(status_error(st, what));
  channel_out_done(*mean, s_m);
  channel_out_done(*var, s_v);
  return ffi::Error::Success();
}

// ------------------------------------------------ synchronized training
// The forward exchanges each shard's (count, mean, M2) in float64 through a
// collective of the caller (lax.all_gather); JAX may run without float64, so
// the row travels as the bits of 1 + 2n doubles in 2 + 4n uint32 words.

ffi::Error StatsRowImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> row, int64_t P,
                        int64_t G, int64_t R, int64_t C, int64_t n_threads) {
  const char *what = "ckbn_bn_stats_row";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, 0.0, 0, 0.0, 0.0, n_threads, &c, &dt));
  const int64_t n = G * C;
  if (row->element_type() != ffi::DataType::U32 ||
      static_cast<int64_t>(row->element_count()) != 2 * (1 + 2 * n))
    return ffi::Error::InvalidArgument(std::string(what) + ": row must be uint32 of 2 + 4n");
  std::vector<double> out(static_cast<size_t>(1 + 2 * n));
  const double count = static_cast<double>(P) * static_cast<double>(R);
  out[0] = count;
  int st = g_table->stats(dt, x.untyped_data(), c.d, out.data() + 1, out.data() + 1 + n,
                          c.n_threads);
  CKBN_TRY(status_error(st, what));
  for (int64_t k = 0; k < n; ++k) out[1 + n + k] *= count;  // biased var -> M2
  std::memcpy(row->untyped_data(), out.data(), out.size() * sizeof(double));
  return ffi::Error::Success();
}

// Merges the gathered rows in order (Chan et al., as ckbn.distributed.merge):
// the global count, mean and biased variance, the same bits on every shard.
ffi::Error MergeImpl(ffi::AnyBuffer rows, ffi::Result<ffi::AnyBuffer> count,
                     ffi::Result<ffi::AnyBuffer> mean, ffi::Result<ffi::AnyBuffer> var,
                     int64_t n) {
  const char *what = "ckbn_bn_merge";
  const int64_t width = 1 + 2 * n;
  if (rows.element_type() != ffi::DataType::U32 || n < 1 ||
      static_cast<int64_t>(rows.element_count()) % (2 * width) != 0)
    return ffi::Error::InvalidArgument(std::string(what) +
                                       ": rows must be uint32 rows of 2 + 4n words");
  const int64_t k = static_cast<int64_t>(rows.element_count()) / (2 * width);
  std::vector<double> r(static_cast<size_t>(k * width));
  std::memcpy(r.data(), rows.untyped_data(), r.size() * sizeof(double));
  double tot = 0.0;
  std::vector<double> m(static_cast<size_t>(n), 0.0), m2(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < k; ++i) {
    const double *row = r.data() + i * width;
    const double nb = row[0];
    if (nb == 0.0) continue;
    if (tot == 0.0) {
      for (int64_t j = 0; j < n; ++j) {
        m[j] = row[1 + j];
        m2[j] = row[1 + n + j];
      }
      tot = nb;
      continue;
    }
    const double t = tot + nb;
    for (int64_t j = 0; j < n; ++j) {
      const double delta = row[1 + j] - m[j];
      m[j] = m[j] + delta * (nb / t);
      m2[j] = m2[j] + row[1 + n + j] + delta * delta * (tot * nb / t);
    }
    tot = t;
  }
  if (tot <= 1.0)
    return ffi::Error::InvalidArgument(
        std::string(what) + ": the global batch has " + std::to_string(int64_t(tot)) +
        " value(s) per channel; synchronized batch normalization needs at least 2");
  for (int64_t j = 0; j < n; ++j) m2[j] /= tot;
  std::vector<double> s_m, s_v;
  double *pm, *pv;
  CKBN_TRY(channel_out(what, "mean", *mean, n, &s_m, &pm));
  CKBN_TRY(channel_out(what, "var", *var, n, &s_v, &pv));
  std::memcpy(pm, m.data(), m.size() * sizeof(double));
  std::memcpy(pv, m2.data(), m2.size() * sizeof(double));
  channel_out_done(*mean, s_m);
  channel_out_done(*var, s_v);
  if (count->element_count() != 1)
    return ffi::Error::InvalidArgument(std::string(what) + ": count must be a scalar");
  if (count->element_type() == ffi::DataType::F64)
    *count->typed_data<double>() = tot;
  else if (count->element_type() == ffi::DataType::F32)
    *count->typed_data<float>() = static_cast<float>(tot);
  else
    return ffi::Error::InvalidArgument(std::string(what) + ": count must be float");
  return ffi::Error::Success();
}

// This shard's gradient sums: sum_e = sum(e), sum_exc = sum(e * (x - mean)).
ffi::Error GradSumsImpl(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                        ffi::AnyBuffer offset, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                        ffi::Result<ffi::AnyBuffer> sum_e, ffi::Result<ffi::AnyBuffer> sum_exc,
                        int64_t P, int64_t G, int64_t R, int64_t C, double eps, int64_t act,
                        double slope, double hi, int64_t n_threads) {
  const char *what = "ckbn_bn_grad_sums";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, eps, act, slope, hi, n_threads, &c, &dt));
  CKBN_TRY(same_data(what, "dy", dy, x));
  const int64_t n = G * C;
  std::vector<double> s_s, s_o, s_m, s_v, s_e, s_x;
  const double *ps, *po, *pm, *pv;
  double *pe, *px;
  CKBN_TRY(channel_in(what, "scale", scale, n, &s_s, &ps));
  CKBN_TRY(channel_in(what, "offset", offset, n, &s_o, &po));
  CKBN_TRY(channel_in(what, "mean", mean, n, &s_m, &pm));
  CKBN_TRY(channel_in(what, "var", var, n, &s_v, &pv));
  CKBN_TRY(channel_out(what, "sum_e", *sum_e, n, &s_e, &pe));
  CKBN_TRY(channel_out(what, "sum_exc", *sum_exc, n, &s_x, &px));
  int st = g_table->grad_sums(dt, dy.untyped_data(), x.untyped_data(), c.d, ps, po, pm, pv,
                              c.eps, &c.act, pe, px, c.n_threads);
  CKBN_TRY(status_error(st, what));
  channel_out_done(*sum_e, s_e);
  channel_out_done(*sum_exc, s_x);
  return ffi::Error::Success();
}

// Training dx from the summed sums over the global count (a scalar input).
ffi::Error BackwardDxImpl(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                          ffi::AnyBuffer offset, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                          ffi::AnyBuffer count, ffi::AnyBuffer sum_e, ffi::AnyBuffer sum_exc,
                          ffi::Result<ffi::AnyBuffer> dx, int64_t P, int64_t G, int64_t R,
                          int64_t C, double eps, int64_t act, double slope, double hi,
                          int64_t n_threads) {
  const char *what = "ckbn_bn_backward_dx";
  Common c;
  int dt;
  CKBN_TRY(make_common(what, x, P, G, R, C, eps, act, slope, hi, n_threads, &c, &dt));
  CKBN_TRY(same_data(what, "dy", dy, x));
  CKBN_TRY(same_data(what, "dx", *dx, x));
  const int64_t n = G * C;
  std::vector<double> s_s, s_o, s_m, s_v, s_e, s_x, s_n;
  const double *ps, *po, *pm, *pv, *pe, *px, *pn;
  CKBN_TRY(channel_in(what, "scale", scale, n, &s_s, &ps));
  CKBN_TRY(channel_in(what, "offset", offset, n, &s_o, &po));
  CKBN_TRY(channel_in(what, "mean", mean, n, &s_m, &pm));
  CKBN_TRY(channel_in(what, "var", var, n, &s_v, &pv));
  CKBN_TRY(channel_in(what, "sum_e", sum_e, n, &s_e, &pe));
  CKBN_TRY(channel_in(what, "sum_exc", sum_exc, n, &s_x, &px));
  CKBN_TRY(channel_in(what, "count", count, 1, &s_n, &pn));
  int st = g_table->backward_dx(dt, dy.untyped_data(), x.untyped_data(), c.d, ps, po, pm, pv,
                                c.eps, *pn, pe, px, &c.act, dx->untyped_data(), nullptr,
                                c.n_threads);
  return status_error(st, what);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnTrain, TrainImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CKBN_COMMON_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnGiven, GivenImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CKBN_COMMON_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnGrad, GradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CKBN_COMMON_ATTRS
                                  .Attr<int64_t>("training"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnStats, StatsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("P")
                                  .Attr<int64_t>("G")
                                  .Attr<int64_t>("R")
                                  .Attr<int64_t>("C")
                                  .Attr<int64_t>("n_threads"));

// Hands the kernel table to the handlers; returns 0, or -1 when its ABI is
// not the one this library was built for (the table is then not used).
extern "C" __attribute__((visibility("default"))) int ckbn_native_set_table(
    const ckbn_kernel_table *table) {
  if (table == nullptr || table->abi != CKBN_TABLE_ABI) return -1;
  g_table = table;
  return 0;
}

// The ABI this library was built for.
extern "C" __attribute__((visibility("default"))) int ckbn_native_abi(void) {
  return CKBN_TABLE_ABI;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnStatsRow, StatsRowImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("P")
                                  .Attr<int64_t>("G")
                                  .Attr<int64_t>("R")
                                  .Attr<int64_t>("C")
                                  .Attr<int64_t>("n_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnMerge, MergeImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("n"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnGradSums, GradSumsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CKBN_COMMON_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(CkbnBnBackwardDx, BackwardDxImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>() CKBN_COMMON_ATTRS);
