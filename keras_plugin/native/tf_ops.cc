// tf_ops.cc -- ckbn's batch normalization as TensorFlow ops.
//
// Four CPU ops call ckbn's compiled kernels through the C-level table of
// ckbn_kernels.h: no Python, no GIL, no copy.  The kernels read the input
// tensors' buffers in place and write into outputs allocated by the op
// context (the normalize output may take over x's buffer, and dx dy's, when
// TensorFlow says no one else holds them).
//
//   CkbnBatchNormTrain  x, scale, offset            -> y, batch_mean, batch_var
//   CkbnBatchNormApply  x, scale, offset, mean, var -> y
//   CkbnBatchNormGrad   dy, x, scale, offset, mean, var -> dx, dscale, doffset
//   CkbnMoments         x                           -> mean, var
//
// Attributes: T (half, float, double: x's type), U (float for half, else T:
// the per-channel type), channel_axes (the non-negative channel axes of x;
// the layout is (P, G, R, C) from ckbn_layout at run time, so any dims work
// as long as the channel axes need no transpose), epsilon and
// negative_slope (float64 written as decimal strings: TensorFlow's float
// attributes are float32), activation ("none", "relu", "relu6",
// "leaky_relu"), training
// (Apply/Grad: whether mean and var are x's own batch statistics, which
// selects the training gradient), n_threads (0: the library default set by
// ckbn_native_set_table).  Statistics are the biased variance.
//
// The table is handed over once from Python (keras_plugin._tf_native) with
// the exported ckbn_native_set_table; a kernel run before that fails with
// FailedPrecondition.
//
// The framework-neutral checks (channel axes, the layout from ckbn_layout),
// the status messages and the per-channel float64 staging are in
// ckbn_native.h, shared with xla_ffi.cc; this file holds the TensorFlow glue
// (attributes, tensors, the mapping of a Fault to a Status) and the kernels,
// each of which reads validate -> one table call -> map the status.
//
// Why the C++ op API and not tensorflow/c/kernels.h: shape functions with
// InferenceContext, attr constraints and OP_REQUIRES error messages come
// with it, input buffers can be forwarded to outputs, and the library is
// built on the user's machine against the installed TensorFlow (cached per
// TensorFlow version), so the C++ ABI never crosses TensorFlow releases.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

#include "ckbn_kernels.h"
#include "ckbn_native.h"

namespace {

using ckbn_native::ChannelIn;
using ckbn_native::ChannelOut;
using ckbn_native::Fault;
using ckbn_native::Kind;

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::FailedPrecondition;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

std::atomic<const ckbn_kernel_table*> g_table{nullptr};
std::atomic<int> g_default_threads{1};
// Kernel runs per op (train, apply, grad, moments), for tests that check
// which path ran; read with ckbn_native_calls.
std::atomic<int64_t> g_calls[4];

// Per-phase timers of Compute, for benchmarks/bench_tf_native.py --part
// pieces: only in a library built with -DCKBN_TF_OP_TIMERS (the plugin
// does so when CKBN_TF_OP_TIMERS=1 is set before it loads the library; the
// flag is part of the cache key), compiled out otherwise.  Phases: 0 the
// table and layout, 1 the per-channel inputs as float64, 2 the x-sized
// output, 3 the per-channel outputs, 4 the kernel, 5 the rest (float32
// rounding of the statistics, the run counter).
#ifdef CKBN_TF_OP_TIMERS
constexpr int kPhases = 6;
std::atomic<int64_t> g_phase_ns[4][kPhases];
std::atomic<int64_t> g_phase_runs[4];

class PhaseTimer {
 public:
  explicit PhaseTimer(int op) : op_(op), last_(Now()) {}
  void Mark(int phase) {
    const int64_t t = Now();
    g_phase_ns[op_][phase].fetch_add(t - last_, std::memory_order_relaxed);
    last_ = t;
  }
  void Done() { g_phase_runs[op_].fetch_add(1, std::memory_order_relaxed); }

 private:
  static int64_t Now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int op_;
  int64_t last_;
};
#define CKBN_TIMER(op) PhaseTimer ckbn_timer_(op)
#define CKBN_MARK(phase) ckbn_timer_.Mark(phase)
#define CKBN_TIMER_DONE() ckbn_timer_.Done()
#else
#define CKBN_TIMER(op) (void)0
#define CKBN_MARK(phase) (void)0
#define CKBN_TIMER_DONE() (void)0
#endif

// ------------------------------------------------------------ shape functions
// The number of channels of x (product of the channel axes' sizes), or
// unknown.  Fails when an axis is out of x's (known) rank.
Status ChannelCount(InferenceContext* c, ShapeHandle x, DimensionHandle* n) {
  std::vector<int64_t> axes;
  TF_RETURN_IF_ERROR(c->GetAttr("channel_axes", &axes));
  if (axes.empty()) return InvalidArgument("channel_axes is empty");
  int64_t max_axis = -1;
  for (int64_t a : axes) {
    if (a < 0) return InvalidArgument("channel_axes must be non-negative, got ", a);
    if (a > max_axis) max_axis = a;
  }
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(x, static_cast<int>(max_axis) + 1, &x));
  if (!c->RankKnown(x)) {
    *n = c->UnknownDim();
    return Status();
  }
  DimensionHandle prod = c->MakeDim(1);
  for (int64_t a : axes) {
    TF_RETURN_IF_ERROR(c->Multiply(prod, c->Dim(x, static_cast<int>(a)), &prod));
  }
  *n = prod;
  return Status();
}

// Merges the channel count with the length of each per-channel input.
Status PerChannel(InferenceContext* c, ShapeHandle x, std::vector<int> inputs,
                  ShapeHandle* out) {
  DimensionHandle n;
  TF_RETURN_IF_ERROR(ChannelCount(c, x, &n));
  for (int i : inputs) {
    ShapeHandle v;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &v));
    TF_RETURN_IF_ERROR(c->Merge(n, c->Dim(v, 0), &n));
  }
  *out = c->Vector(n);
  return Status();
}

#define CKBN_COMMON_ATTRS                                     \
  Attr("T: {half, float, double}")                            \
      .Attr("U: {float, double}")                             \
      .Attr("channel_axes: list(int)")                        \
      .Attr("epsilon: string = '0.001'")                      \
      .Attr("n_threads: int = 0")

}  // namespace

REGISTER_OP("CkbnBatchNormTrain")
    .Input("x: T")
    .Input("scale: U")
    .Input("offset: U")
    .Output("y: T")
    .Output("batch_mean: U")
    .Output("batch_var: U")
    .CKBN_COMMON_ATTRS
    .Attr("activation: {'none', 'relu', 'relu6', 'leaky_relu'} = 'none'")
    .Attr("negative_slope: string = '0'")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle stats;
      TF_RETURN_IF_ERROR(PerChannel(c, c->input(0), {1, 2}, &stats));
      c->set_output(0, c->input(0));
      c->set_output(1, stats);
      c->set_output(2, stats);
      return Status();
    })
    .Doc("ckbn batch normalization, training forward (batch statistics, biased variance).");

REGISTER_OP("CkbnBatchNormApply")
    .Input("x: T")
    .Input("scale: U")
    .Input("offset: U")
    .Input("mean: U")
    .Input("variance: U")
    .Output("y: T")
    .CKBN_COMMON_ATTRS
    .Attr("activation: {'none', 'relu', 'relu6', 'leaky_relu'} = 'none'")
    .Attr("negative_slope: string = '0'")
    .Attr("training: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle stats;
      TF_RETURN_IF_ERROR(PerChannel(c, c->input(0), {1, 2, 3, 4}, &stats));
      c->set_output(0, c->input(0));
      return Status();
    })
    .Doc("ckbn batch normalization with given statistics (inference, renorm).");

REGISTER_OP("CkbnBatchNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("scale: U")
    .Input("offset: U")
    .Input("mean: U")
    .Input("variance: U")
    .Output("dx: T")
    .Output("dscale: U")
    .Output("doffset: U")
    .CKBN_COMMON_ATTRS
    .Attr("activation: {'none', 'relu', 'relu6', 'leaky_relu'} = 'none'")
    .Attr("negative_slope: string = '0'")
    .Attr("training: bool = true")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, stats;
      TF_RETURN_IF_ERROR(c->Merge(c->input(0), c->input(1), &x));
      TF_RETURN_IF_ERROR(PerChannel(c, x, {2, 3, 4, 5}, &stats));
      c->set_output(0, x);
      c->set_output(1, stats);
      c->set_output(2, stats);
      return Status();
    })
    .Doc("Gradients of CkbnBatchNormTrain (training=true) or CkbnBatchNormApply.");

REGISTER_OP("CkbnMoments")
    .Input("x: T")
    .Output("mean: U")
    .Output("variance: U")
    .CKBN_COMMON_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle stats;
      TF_RETURN_IF_ERROR(PerChannel(c, c->input(0), {}, &stats));
      c->set_output(0, stats);
      c->set_output(1, stats);
      return Status();
    })
    .Doc("ckbn per-channel batch mean and biased variance (not differentiable).");

namespace {

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<Eigen::half> {
  static constexpr int value = CKBN_FLOAT16;
};
template <>
struct DTypeOf<float> {
  static constexpr int value = CKBN_FLOAT32;
};
template <>
struct DTypeOf<double> {
  static constexpr int value = CKBN_FLOAT64;
};

// ------------------------------------------------------ the glue to TensorFlow
Status ToStatus(const Fault& f) {
  switch (f.kind) {
    case Kind::kOk:
      return Status();
    case Kind::kNoMemory:
      return tensorflow::errors::ResourceExhausted(f.message);
    case Kind::kInvalid:
      return InvalidArgument(f.message);
    case Kind::kUnsupported:
      return tensorflow::errors::Unimplemented(f.message);
    case Kind::kNotReady:
      return FailedPrecondition(f.message);
    case Kind::kInternal:
    default:
      return tensorflow::errors::Internal(f.message);
  }
}

// Attributes and run-time layout shared by the four kernels.
class CkbnOpBase : public OpKernel {
 public:
  explicit CkbnOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<int64_t> axes;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("channel_axes", &axes));
    OP_REQUIRES_OK(ctx, ToStatus(ckbn_native::axes_mask(axes, &mask_, &max_axis_)));
    OP_REQUIRES_OK(ctx, ReadNumber(ctx, "epsilon", &eps_));
    int64_t n_threads = 0;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("n_threads", &n_threads));
    OP_REQUIRES(ctx, n_threads >= 0, InvalidArgument("n_threads must be >= 0, got ", n_threads));
    n_threads_ = static_cast<int>(n_threads);
    act_ = ckbn_act{0, 0.0, INFINITY};
    if (ctx->HasAttr("activation")) {
      std::string name;
      double slope = 0.0;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &name));
      OP_REQUIRES_OK(ctx, ReadNumber(ctx, "negative_slope", &slope));
      if (name == "relu") {
        act_ = ckbn_act{1, 0.0, INFINITY};
      } else if (name == "relu6") {
        act_ = ckbn_act{1, 0.0, 6.0};
      } else if (name == "leaky_relu") {
        act_ = ckbn_act{1, slope, INFINITY};
      }
    }
    training_ = false;
    if (ctx->HasAttr("training")) OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
  }

 protected:
  // A float64 attribute, kept as a decimal string (TensorFlow's float
  // attributes are float32; epsilon and the slope must be exact); it must be
  // finite and >= 0.
  static Status ReadNumber(OpKernelConstruction* ctx, const char* attr, double* out) {
    std::string text;
    TF_RETURN_IF_ERROR(ctx->GetAttr(attr, &text));
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE ||
        !std::isfinite(v) || v < 0.0)
      return InvalidArgument(attr, " must be a finite number >= 0, got '", text, "'");
    *out = v;
    return Status();
  }

  // The table (checked for x's dtype T), with x's canonical dims and channel
  // count in *d and *n; null (with the context's status set) on a bad input.
  template <typename T>
  const ckbn_kernel_table* Prepare(OpKernelContext* ctx, const Tensor& x, ckbn_dims* d,
                                   int64_t* n) {
    const ckbn_kernel_table* table = g_table.load(std::memory_order_acquire);
    Fault f = ckbn_native::data_fault(table, DTypeOf<T>::value, "ckbn");
    if (f.ok()) {
      const int ndim = x.dims();
      int64_t shape[TensorShape::MaxDimensions()];
      for (int i = 0; i < ndim; i++) shape[i] = x.dim_size(i);
      f = ckbn_native::layout_of(shape, ndim, mask_, max_axis_, d);
    }
    if (!f.ok()) {
      ctx->CtxFailure(ToStatus(f));
      return nullptr;
    }
    *n = static_cast<int64_t>(d->G) * d->C;
    return table;
  }

  // Input `index` as a per-channel float64 array (zero-copy for double);
  // false, with the context's status set, on a shape that is not [n].
  template <typename U>
  bool In(OpKernelContext* ctx, int index, int64_t n, ChannelIn* out) {
    const Tensor& t = ctx->input(index);
    if (t.dims() != 1 || t.dim_size(0) != n) {
      ctx->CtxFailure(InvalidArgument(name(), ": input ", index, " (",
                                      ctx->op_kernel().def().input(index), ") has shape ",
                                      t.shape().DebugString(), ", expected [", n,
                                      "] (one value per channel)"));
      return false;
    }
    return out->bind(t.flat<U>().data(), DTypeOf<U>::value, n);
  }

  // A new [n] output the kernels write in float64 (ChannelOut::finish).
  template <typename U>
  bool Out(OpKernelContext* ctx, int index, int64_t n, ChannelOut* out) {
    Tensor* t = nullptr;
    Status s = ctx->allocate_output(index, TensorShape({n}), &t);
    if (!s.ok()) {
      ctx->CtxFailure(s);
      return false;
    }
    return out->bind(t->flat<U>().data(), DTypeOf<U>::value, n);
  }

  // Maps the table's status onto the context; true when it is CKBN_OK.
  bool Done(OpKernelContext* ctx, int status, const char* what) {
    Fault f = ckbn_native::status_fault(status, what);
    if (f.ok()) return true;
    ctx->CtxFailure(ToStatus(f));
    return false;
  }

  bool NeedData(OpKernelContext* ctx, const Tensor& x, const ckbn_dims& d) {
    if (d.P * d.R > 0) return true;
    ctx->CtxFailure(InvalidArgument("x is empty (shape ", x.shape().DebugString(),
                                    "); batch normalization needs data"));
    return false;
  }

  int threads() const { return n_threads_ > 0 ? n_threads_ : g_default_threads.load(); }
  const ckbn_act* act() const { return act_.on ? &act_ : nullptr; }

  uint64_t mask_;
  int max_axis_;
  double eps_;
  int n_threads_;
  ckbn_act act_;
  bool training_;
};

template <typename T, typename U>
class TrainOp : public CkbnOpBase {
 public:
  using CkbnOpBase::CkbnOpBase;
  void Compute(OpKernelContext* ctx) override {
    CKBN_TIMER(0);
    const Tensor& x = ctx->input(0);
    ckbn_dims d;
    int64_t n;
    ChannelIn scale, offset;
    ChannelOut mean, var;
    Tensor* y = nullptr;
    const ckbn_kernel_table* table = Prepare<T>(ctx, x, &d, &n);
    if (table == nullptr) return;
    CKBN_MARK(0);
    if (!In<U>(ctx, 1, n, &scale) || !In<U>(ctx, 2, n, &offset) || !NeedData(ctx, x, d)) return;
    CKBN_MARK(1);
    // y may take over x's buffer when no one else holds it (the kernel reads
    // x for the statistics before it writes y; y may be x); with a gradient
    // x is held for the gradient op, so it is not.
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    CKBN_MARK(2);
    if (!Out<U>(ctx, 1, n, &mean) || !Out<U>(ctx, 2, n, &var)) return;
    CKBN_MARK(3);
    if (!Done(ctx, table->forward_train(DTypeOf<T>::value, x.flat<T>().data(), d, scale.get(),
                                          offset.get(), eps_, act(), y->flat<T>().data(),
                                          mean.get(), var.get(), threads()),
              "ckbn forward_train"))
      return;
    CKBN_MARK(4);
    g_calls[0].fetch_add(1, std::memory_order_relaxed);
    mean.finish();
    var.finish();
    CKBN_MARK(5);
    CKBN_TIMER_DONE();
  }
};

template <typename T, typename U>
class ApplyOp : public CkbnOpBase {
 public:
  using CkbnOpBase::CkbnOpBase;
  void Compute(OpKernelContext* ctx) override {
    CKBN_TIMER(1);
    const Tensor& x = ctx->input(0);
    ckbn_dims d;
    int64_t n;
    ChannelIn scale, offset, mean, var;
    Tensor* y = nullptr;
    const ckbn_kernel_table* table = Prepare<T>(ctx, x, &d, &n);
    if (table == nullptr) return;
    CKBN_MARK(0);
    if (!In<U>(ctx, 1, n, &scale) || !In<U>(ctx, 2, n, &offset) || !In<U>(ctx, 3, n, &mean) ||
        !In<U>(ctx, 4, n, &var))
      return;
    CKBN_MARK(1);
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    CKBN_MARK(2);
    CKBN_MARK(3);
    g_calls[1].fetch_add(1, std::memory_order_relaxed);
    if (x.NumElements() == 0) return;
    if (!Done(ctx, table->forward_infer(DTypeOf<T>::value, x.flat<T>().data(), d, scale.get(),
                                          offset.get(), mean.get(), var.get(), eps_, act(),
                                          y->flat<T>().data(), threads()),
              "ckbn forward_infer"))
      return;
    CKBN_MARK(4);
    CKBN_MARK(5);
    CKBN_TIMER_DONE();
  }
};

template <typename T, typename U>
class GradOp : public CkbnOpBase {
 public:
  using CkbnOpBase::CkbnOpBase;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES(ctx, dy.shape() == x.shape(),
                InvalidArgument("dy has shape ", dy.shape().DebugString(), ", x has shape ",
                                x.shape().DebugString(), "; they must match"));
    ckbn_dims d;
    int64_t n;
    ChannelIn scale, offset, mean, var;
    ChannelOut dscale, doffset;
    Tensor* dx = nullptr;
    const ckbn_kernel_table* table = Prepare<T>(ctx, x, &d, &n);
    if (table == nullptr || !In<U>(ctx, 2, n, &scale) || !In<U>(ctx, 3, n, &offset) ||
        !In<U>(ctx, 4, n, &mean) || !In<U>(ctx, 5, n, &var) ||
        (training_ && !NeedData(ctx, x, d)))
      return;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, x.shape(), &dx));
    if (!Out<U>(ctx, 1, n, &dscale) || !Out<U>(ctx, 2, n, &doffset)) return;
    g_calls[2].fetch_add(1, std::memory_order_relaxed);
    if (x.NumElements() == 0) {  // inference gradient of an empty batch: zeros
      std::fill(dscale.get(), dscale.get() + n, 0.0);
      std::fill(doffset.get(), doffset.get() + n, 0.0);
    } else if (!Done(ctx, table->backward(DTypeOf<T>::value, dy.flat<T>().data(),
                                           x.flat<T>().data(), d, scale.get(), offset.get(),
                                           mean.get(), var.get(), eps_, training_ ? 1 : 0,
                                           act(), dx->flat<T>().data(), dscale.get(),
                                           doffset.get(), threads()),
                     "ckbn backward")) {
      return;
    }
    dscale.finish();
    doffset.finish();
  }
};

template <typename T, typename U>
class MomentsOp : public CkbnOpBase {
 public:
  using CkbnOpBase::CkbnOpBase;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    ckbn_dims d;
    int64_t n;
    ChannelOut mean, var;
    const ckbn_kernel_table* table = Prepare<T>(ctx, x, &d, &n);
    if (table == nullptr || !NeedData(ctx, x, d)) return;
    if (!Out<U>(ctx, 0, n, &mean) || !Out<U>(ctx, 1, n, &var)) return;
    if (!Done(ctx, table->stats(DTypeOf<T>::value, x.flat<T>().data(), d, mean.get(),
                                  var.get(), threads()),
              "ckbn stats"))
      return;
    g_calls[3].fetch_add(1, std::memory_order_relaxed);
    mean.finish();
    var.finish();
  }
};

#define CKBN_REGISTER(T, U)                                                              \
  REGISTER_KERNEL_BUILDER(Name("CkbnBatchNormTrain")                                     \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<U>("U"),                                   \
                          TrainOp<T, U>);                                                \
  REGISTER_KERNEL_BUILDER(Name("CkbnBatchNormApply")                                     \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<U>("U"),                                   \
                          ApplyOp<T, U>);                                                \
  REGISTER_KERNEL_BUILDER(Name("CkbnBatchNormGrad")                                      \
                              .Device(DEVICE_CPU)                                        \
                              .TypeConstraint<T>("T")                                    \
                              .TypeConstraint<U>("U"),                                   \
                          GradOp<T, U>);                                                 \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("CkbnMoments").Device(DEVICE_CPU).TypeConstraint<T>("T").TypeConstraint<U>("U"), \
      MomentsOp<T, U>);

CKBN_REGISTER(Eigen::half, float)
CKBN_REGISTER(float, float)
CKBN_REGISTER(double, double)

#ifdef CKBN_TF_OP_TIMERS
// TensorFlow's own cost of an op with the signature of CkbnBatchNormTrain /
// CkbnBatchNormApply: the same inputs, attributes and outputs, allocated
// (or forwarded) the same way, and nothing else -- no layout, no
// conversion, no kernel, outputs left unwritten.  Timing builds only.
template <typename T>
class NullTrainOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const int64_t n = ctx->input(1).NumElements();
    Tensor* t = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n}), &t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({n}), &t));
  }
};

template <typename T>
class NullApplyOp : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* ctx) override {
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, ctx->input(0).shape(), &y));
  }
};

REGISTER_KERNEL_BUILDER(Name("CkbnNullTrain").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        NullTrainOp<float>);
REGISTER_KERNEL_BUILDER(Name("CkbnNullApply").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        NullApplyOp<float>);
#endif

}  // namespace

#ifdef CKBN_TF_OP_TIMERS
REGISTER_OP("CkbnNullTrain")
    .Input("x: T")
    .Input("scale: U")
    .Input("offset: U")
    .Output("y: T")
    .Output("batch_mean: U")
    .Output("batch_var: U")
    .CKBN_COMMON_ATTRS
    .Attr("activation: {'none', 'relu', 'relu6', 'leaky_relu'} = 'none'")
    .Attr("negative_slope: string = '0'")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(1));
      return Status();
    });

REGISTER_OP("CkbnNullApply")
    .Input("x: T")
    .Input("scale: U")
    .Input("offset: U")
    .Input("mean: U")
    .Input("variance: U")
    .Output("y: T")
    .CKBN_COMMON_ATTRS
    .Attr("activation: {'none', 'relu', 'relu6', 'leaky_relu'} = 'none'")
    .Attr("negative_slope: string = '0'")
    .Attr("training: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return Status();
    });

// Nanoseconds spent in each phase of op `which` (0 train, 1 apply) summed
// over its successful runs since the last reset, into out[0..5]; returns
// the number of runs (-1 for another `which`).  reset != 0 zeroes them after
// reading.
extern "C" __attribute__((visibility("default"))) int64_t ckbn_native_phase_ns(int which,
                                                                              int64_t* out,
                                                                              int reset) {
  if (which < 0 || which > 1) return -1;
  for (int i = 0; i < kPhases; i++)
    out[i] = reset ? g_phase_ns[which][i].exchange(0) : g_phase_ns[which][i].load();
  return reset ? g_phase_runs[which].exchange(0) : g_phase_runs[which].load();
}
#endif

// Hands the kernel table to the ops (once, from Python, after loading).
// Returns 0, or -1 when the table's ABI is not the one this file was built
// against (the ops then keep failing with FailedPrecondition).
extern "C" __attribute__((visibility("default"))) int ckbn_native_set_table(
    const ckbn_kernel_table* table, int default_threads) {
  if (!ckbn_native::table_usable(table)) return -1;
  g_default_threads.store(default_threads > 0 ? default_threads : 1);
  g_table.store(table, std::memory_order_release);
  return 0;
}

// Number of runs of op `which` (0 train, 1 apply, 2 grad, 3 moments) in this
// process; -1 for another `which`.
extern "C" __attribute__((visibility("default"))) int64_t ckbn_native_calls(int which) {
  if (which < 0 || which > 3) return -1;
  return g_calls[which].load(std::memory_order_relaxed);
}
