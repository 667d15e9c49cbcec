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
// gets.  The activation is three attributes (act: 0 none, 1 piecewise linear
// with slope and hi, 2 swish), the OpenMP thread count one more (n_threads).
//
// The table is handed over once, after loading, by ckbn_native_set_table();
// handlers called before that return an error.
//
// The framework-neutral checks, the status messages and the per-channel
// float64 staging are ckbn_native.h's (shared with tf_ops.cc); this file holds
// the XLA glue: buffer types, the mapping of a Fault to ffi::Error, and the
// handlers, each of which reads validate -> one table call -> map the status.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ckbn_kernels.h"
#include "ckbn_native.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using ckbn_native::ChannelIn;
using ckbn_native::ChannelOut;
using ckbn_native::Fault;
using ckbn_native::Kind;

const ckbn_kernel_table *g_table = nullptr;

// ------------------------------------------------------------- the glue to XLA
ffi::Error to_error(const Fault &f) {
  switch (f.kind) {
    case Kind::kOk:
      return ffi::Error::Success();
    case Kind::kNoMemory:
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, f.message);
    case Kind::kInvalid:
    case Kind::kUnsupported:
      return ffi::Error::InvalidArgument(f.message);
    case Kind::kNotReady:
    case Kind::kInternal:
    default:
      return ffi::Error::Internal(f.message);
  }
}

// The table's dtype code of an XLA element type, or -1.
int dtype_code(ffi::DataType t) {
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

#define CKBN_TRY(expr)                      \
  do {                                      \
    ffi::Error err_ = (expr);               \
    if (err_.failure()) return err_;        \
  } while (0)

// The attributes every handler takes, and the data buffer: validated once.
struct Call {
  const char *what;
  int dtype = -1;
  ckbn_dims d{0, 0, 0, 0};
  int64_t n = 0;  // channels, G*C
  double eps = 0.0;
  ckbn_act act{0, CKBN_ACT_PIECEWISE, 0.0, 0.0};
  int n_threads = 1;

  // The table, x's dtype and the layout attributes against x's size.
  ffi::Error data(const ffi::AnyBuffer &x, int64_t P, int64_t G, int64_t R, int64_t C,
                  int64_t threads) {
    dtype = dtype_code(x.element_type());
    CKBN_TRY(to_error(ckbn_native::data_fault(g_table, dtype, what)));
    CKBN_TRY(to_error(ckbn_native::dims_of(what, P, G, R, C,
                                           static_cast<int64_t>(x.element_count()), &d)));
    if (threads < 1)
      return ffi::Error::InvalidArgument(std::string(what) + ": n_threads must be >= 1");
    n = G * C;
    n_threads = static_cast<int>(threads);
    return ffi::Error::Success();
  }

  // data() plus epsilon and the activation attributes.
  ffi::Error data(const ffi::AnyBuffer &x, int64_t P, int64_t G, int64_t R, int64_t C,
                  double epsilon, int64_t on, double slope, double hi, int64_t threads) {
    eps = epsilon;
    if (on < 0 || on > 2)
      return ffi::Error::InvalidArgument(std::string(what) + ": act must be 0, 1 or 2");
    act = ckbn_native::make_act(on, slope, hi);
    return data(x, P, G, R, C, threads);
  }

  // Another data buffer (y, dy, dx) of x's dtype and size.
  ffi::Error like_x(const char *name, const ffi::AnyBuffer &a, const ffi::AnyBuffer &x) const {
    if (a.element_type() != x.element_type() || a.element_count() != x.element_count())
      return ffi::Error::InvalidArgument(std::string(what) + ": " + name +
                                         " must have x's dtype and size");
    return ffi::Error::Success();
  }

  // A per-channel input of `count` values (n by default) as float64.
  ffi::Error in(const char *name, const ffi::AnyBuffer &b, ChannelIn *c,
                int64_t count = -1) const {
    count = count < 0 ? n : count;
    CKBN_TRY(to_error(ckbn_native::count_fault(
        what, name, static_cast<int64_t>(b.element_count()), count)));
    if (!c->bind(b.untyped_data(), dtype_code(b.element_type()), count))
      return to_error(ckbn_native::channel_type_fault(what, name));
    return ffi::Error::Success();
  }

  // A per-channel output of n values, written in float64 (ChannelOut::finish).
  ffi::Error out(const char *name, ffi::AnyBuffer b, ChannelOut *c) const {
    CKBN_TRY(to_error(ckbn_native::count_fault(
        what, name, static_cast<int64_t>(b.element_count()), n)));
    if (!c->bind(b.untyped_data(), dtype_code(b.element_type()), n))
      return to_error(ckbn_native::channel_type_fault(what, name));
    return ffi::Error::Success();
  }

  ffi::Error status(int st) const { return to_error(ckbn_native::status_fault(st, what)); }
};

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
  Call c{"ckbn_bn_train"};
  ChannelIn s, o;
  ChannelOut m, v;
  CKBN_TRY(c.data(x, P, G, R, C, eps, act, slope, hi, n_threads));
  CKBN_TRY(c.like_x("y", *y, x));
  CKBN_TRY(c.in("scale", scale, &s));
  CKBN_TRY(c.in("offset", offset, &o));
  CKBN_TRY(c.out("mean", *mean, &m));
  CKBN_TRY(c.out("var", *var, &v));
  CKBN_TRY(c.status(g_table->forward_train(c.dtype, x.untyped_data(), c.d, s.get(), o.get(),
                                           c.eps, &c.act, y->untyped_data(), m.get(), v.get(),
                                           c.n_threads)));
  m.finish();
  v.finish();
  return ffi::Error::Success();
}

// ---------------------------------------------- forward with given statistics
ffi::Error GivenImpl(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer offset,
                     ffi::AnyBuffer mean, ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> y,
                     int64_t P, int64_t G, int64_t R, int64_t C, double eps, int64_t act,
                     double slope, double hi, int64_t n_threads) {
  Call c{"ckbn_bn_given"};
  ChannelIn s, o, m, v;
  CKBN_TRY(c.data(x, P, G, R, C, eps, act, slope, hi, n_threads));
  CKBN_TRY(c.like_x("y", *y, x));
  CKBN_TRY(c.in("scale", scale, &s));
  CKBN_TRY(c.in("offset", offset, &o));
  CKBN_TRY(c.in("mean", mean, &m));
  CKBN_TRY(c.in("var", var, &v));
  return c.status(g_table->forward_infer(c.dtype, x.untyped_data(), c.d, s.get(), o.get(),
                                         m.get(), v.get(), c.eps, &c.act, y->untyped_data(),
                                         c.n_threads));
}

// ---------------------------------------------------------------- backward
ffi::Error GradImpl(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                    ffi::AnyBuffer offset, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                    ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dscale,
                    ffi::Result<ffi::AnyBuffer> doffset, int64_t P, int64_t G, int64_t R,
                    int64_t C, double eps, int64_t act, double slope, double hi,
                    int64_t n_threads, int64_t training) {
  Call c{"ckbn_bn_grad"};
  ChannelIn s, o, m, v;
  ChannelOut ds, dof;
  CKBN_TRY(c.data(x, P, G, R, C, eps, act, slope, hi, n_threads));
  CKBN_TRY(c.like_x("dy", dy, x));
  CKBN_TRY(c.like_x("dx", *dx, x));
  CKBN_TRY(c.in("scale", scale, &s));
  CKBN_TRY(c.in("offset", offset, &o));
  CKBN_TRY(c.in("mean", mean, &m));
  CKBN_TRY(c.in("var", var, &v));
  CKBN_TRY(c.out("dscale", *dscale, &ds));
  CKBN_TRY(c.out("doffset", *doffset, &dof));
  CKBN_TRY(c.status(g_table->backward(c.dtype, dy.untyped_data(), x.untyped_data(), c.d,
                                      s.get(), o.get(), m.get(), v.get(), c.eps,
                                      training != 0, &c.act, dx->untyped_data(), ds.get(),
                                      dof.get(), c.n_threads)));
  ds.finish();
  dof.finish();
  return ffi::Error::Success();
}

// ----------------------------------------------------------------- moments
ffi::Error StatsImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> mean,
                     ffi::Result<ffi::AnyBuffer> var, int64_t P, int64_t G, int64_t R,
                     int64_t C, int64_t n_threads) {
  Call c{"ckbn_bn_stats"};
  ChannelOut m, v;
  CKBN_TRY(c.data(x, P, G, R, C, n_threads));
  CKBN_TRY(c.out("mean", *mean, &m));
  CKBN_TRY(c.out("var", *var, &v));
  CKBN_TRY(c.status(g_table->stats(c.dtype, x.untyped_data(), c.d, m.get(), v.get(),
                                   c.n_threads)));
  m.finish();
  v.finish();
  return ffi::Error::Success();
}

// ------------------------------------------------ synchronized training
// The forward exchanges each shard's (count, mean, M2) in float64 through a
// collective of the caller (lax.all_gather); JAX may run without float64, so
// the row travels as the bits of 1 + 2n doubles in 2 + 4n uint32 words.

ffi::Error StatsRowImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> row, int64_t P,
                        int64_t G, int64_t R, int64_t C, int64_t n_threads) {
  Call c{"ckbn_bn_stats_row"};
  CKBN_TRY(c.data(x, P, G, R, C, n_threads));
  const int64_t n = c.n;
  if (row->element_type() != ffi::DataType::U32 ||
      static_cast<int64_t>(row->element_count()) != 2 * (1 + 2 * n))
    return ffi::Error::InvalidArgument(std::string(c.what) + ": row must be uint32 of 2 + 4n");
  std::vector<double> out(static_cast<size_t>(1 + 2 * n));
  const double count = static_cast<double>(P) * static_cast<double>(R);
  out[0] = count;
  CKBN_TRY(c.status(g_table->stats(c.dtype, x.untyped_data(), c.d, out.data() + 1,
                                   out.data() + 1 + n, c.n_threads)));
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
  Call c{what};
  c.n = n;
  ChannelOut pm, pv;
  CKBN_TRY(c.out("mean", *mean, &pm));
  CKBN_TRY(c.out("var", *var, &pv));
  std::memcpy(pm.get(), m.data(), m.size() * sizeof(double));
  std::memcpy(pv.get(), m2.data(), m2.size() * sizeof(double));
  pm.finish();
  pv.finish();
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
  Call c{"ckbn_bn_grad_sums"};
  ChannelIn s, o, m, v;
  ChannelOut se, sx;
  CKBN_TRY(c.data(x, P, G, R, C, eps, act, slope, hi, n_threads));
  CKBN_TRY(c.like_x("dy", dy, x));
  CKBN_TRY(c.in("scale", scale, &s));
  CKBN_TRY(c.in("offset", offset, &o));
  CKBN_TRY(c.in("mean", mean, &m));
  CKBN_TRY(c.in("var", var, &v));
  CKBN_TRY(c.out("sum_e", *sum_e, &se));
  CKBN_TRY(c.out("sum_exc", *sum_exc, &sx));
  CKBN_TRY(c.status(g_table->grad_sums(c.dtype, dy.untyped_data(), x.untyped_data(), c.d,
                                       s.get(), o.get(), m.get(), v.get(), c.eps, &c.act,
                                       se.get(), sx.get(), c.n_threads)));
  se.finish();
  sx.finish();
  return ffi::Error::Success();
}

// Training dx from the summed sums over the global count (a scalar input).
ffi::Error BackwardDxImpl(ffi::AnyBuffer dy, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                          ffi::AnyBuffer offset, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                          ffi::AnyBuffer count, ffi::AnyBuffer sum_e, ffi::AnyBuffer sum_exc,
                          ffi::Result<ffi::AnyBuffer> dx, int64_t P, int64_t G, int64_t R,
                          int64_t C, double eps, int64_t act, double slope, double hi,
                          int64_t n_threads) {
  Call c{"ckbn_bn_backward_dx"};
  ChannelIn s, o, m, v, se, sx, k;
  CKBN_TRY(c.data(x, P, G, R, C, eps, act, slope, hi, n_threads));
  CKBN_TRY(c.like_x("dy", dy, x));
  CKBN_TRY(c.like_x("dx", *dx, x));
  CKBN_TRY(c.in("scale", scale, &s));
  CKBN_TRY(c.in("offset", offset, &o));
  CKBN_TRY(c.in("mean", mean, &m));
  CKBN_TRY(c.in("var", var, &v));
  CKBN_TRY(c.in("sum_e", sum_e, &se));
  CKBN_TRY(c.in("sum_exc", sum_exc, &sx));
  CKBN_TRY(c.in("count", count, &k, 1));
  return c.status(g_table->backward_dx(c.dtype, dy.untyped_data(), x.untyped_data(), c.d,
                                       s.get(), o.get(), m.get(), v.get(), c.eps, *k.get(),
                                       se.get(), sx.get(), &c.act, dx->untyped_data(), nullptr,
                                       c.n_threads));
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
  if (!ckbn_native::table_usable(table)) return -1;
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
