// torch_ops.cc -- ckbn's batch normalization as PyTorch operators with a
// C++ autograd node.
//
// Two operators in the namespace `ckbn_native` call ckbn's compiled kernels
// through the C-level table of ckbn_kernels.h, and record one C++ autograd
// node whose backward calls the table's backward: no Python, no
// torch.autograd.Function, no NumPy round trip per call.
//
//   bn_train(x, scale, offset, moving_mean?, moving_var?, momentum, axes, eps,
//            act, slope, hi, n_threads) -> (y, batch_mean, batch_var)
//     The batch statistics (biased variance), in the statistics' dtype, are
//     not differentiable.  With moving_mean and moving_var, they are also
//     folded into those in place, moving = moving * momentum + batch *
//     (1 - momentum), in the statistics' dtype, one rounding per operation
//     (keras_plugin._torch._update_moving does the same operations), and
//     their version counters are bumped as an in-place PyTorch op would.
//   bn_given(x, scale, offset, mean, var, axes, eps, train_grad, act, slope,
//            hi, n_threads) -> y
//     With given statistics; the backward is the training one when
//     train_grad (mean and var are x's own batch statistics), else the one
//     with constant statistics (it uses copies of mean and var taken at the
//     call, so a later in-place update of those does not change it).
//
// Both are differentiable in x, scale and offset.  x is float16, float32 or
// float64 (float16 only where the table has float16 kernels), on the CPU;
// the per-channel tensors are float32 or float64, one value per channel.
// axes are the non-negative channel axes of x (the layout comes from
// ckbn_layout: channel axes that need a transpose are refused); act is 0
// (none), 1 (piecewise linear: slope for z <= 0, clipped at hi) or 2
// (swish); n_threads >= 1 is the OpenMP team of the kernel calls.  Bad
// arguments raise ValueError or TypeError before anything is written.
//
// The table is handed over once from Python (keras_plugin._torch_native) with
// the exported ckbn_native_set_table.  The framework-neutral checks, the
// status messages and the per-channel float64 staging are in ckbn_native.h,
// shared with tf_ops.cc and xla_ffi.cc.

#include <atomic>
#include <chrono>
static inline int64_t now_ns(){return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int64_t g_t[8];
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "ckbn_kernels.h"
#include "ckbn_native.h"

namespace {

using ckbn_native::ChannelIn;
using ckbn_native::ChannelOut;
using ckbn_native::Fault;
using ckbn_native::Kind;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::atomic<const ckbn_kernel_table*> g_table{nullptr};
// Kernel runs per entry (forward_train, forward_infer, backward), for tests
// that check which path ran; read with ckbn_native_calls.
std::atomic<int64_t> g_calls[3];

// A Fault as the Python exception a caller expects.
void raise(const Fault& f) {
  switch (f.kind) {
    case Kind::kOk:
      return;
    case Kind::kInvalid:
      TORCH_CHECK_VALUE(false, f.message);
    case Kind::kUnsupported:
      TORCH_CHECK_TYPE(false, f.message);
    default:
      TORCH_CHECK(false, f.message);
  }
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return CKBN_FLOAT16;
    case at::kFloat:
      return CKBN_FLOAT32;
    case at::kDouble:
      return CKBN_FLOAT64;
    default:
      return -1;
  }
}

at::ScalarType stat_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

ckbn_act make_act(int64_t act, double slope, double hi) {
  TORCH_CHECK_VALUE(act >= 0 && act <= 2, "ckbn: act must be 0, 1 or 2, got ", act);
  TORCH_CHECK_VALUE(std::isfinite(slope) && slope >= 0.0,
                    "ckbn: slope must be a finite number >= 0, got ", slope);
  TORCH_CHECK_VALUE(hi > 0.0, "ckbn: hi must be > 0, got ", hi);
  return ckbn_native::make_act(act, slope, hi);
}

// What every call checks about x: the table takes its dtype, it lives on the
// CPU, its channel axes map onto (P, G, R, C) in place.  Fills *d and *n
// (the channel count) and returns the table.
const ckbn_kernel_table* prepare(const at::Tensor& x, at::IntArrayRef axes, double eps,
                                 int64_t n_threads, ckbn_dims* d, int64_t* n) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), "ckbn: x must be on the CPU, got ", x.device());
  const ckbn_kernel_table* table = g_table.load(std::memory_order_acquire);
  raise(ckbn_native::data_fault(table, dtype_code(x.scalar_type()), "ckbn"));
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0.0,
                    "ckbn: eps must be a finite number >= 0, got ", eps);
  TORCH_CHECK_VALUE(n_threads >= 1, "ckbn: n_threads must be >= 1, got ", n_threads);
  uint64_t mask = 0;
  int max_axis = -1;
  raise(ckbn_native::axes_mask(std::vector<int64_t>(axes.begin(), axes.end()), &mask,
                               &max_axis));
  const int ndim = static_cast<int>(x.dim());
  raise(ckbn_native::layout_of(x.sizes().data(), ndim, mask, max_axis, d));
  *n = static_cast<int64_t>(d->G) * d->C;
  return table;
}

// A per-channel tensor with n values, as float64 (ChannelIn); it must be
// contiguous, on the CPU, float32 or float64.
void bind_in(ChannelIn* out, const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK_VALUE(t.defined(), "ckbn: ", name, " is missing");
  TORCH_CHECK_VALUE(t.device().is_cpu(), "ckbn: ", name, " must be on the CPU");
  raise(ckbn_native::count_fault("ckbn", name, t.numel(), n));
  const int code = dtype_code(t.scalar_type());
  TORCH_CHECK_TYPE(code == CKBN_FLOAT32 || code == CKBN_FLOAT64, "ckbn: ", name,
                   " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), "ckbn: ", name, " must be contiguous");
  out->bind(t.data_ptr(), code, n);
}

at::Tensor per_channel(int64_t n, at::ScalarType t) {
  return at::empty({n}, at::TensorOptions().dtype(t).device(at::kCPU));
}

void ok(int status, const char* what) { raise(ckbn_native::status_fault(status, what)); }

// moving = moving * momentum + batch * (1 - momentum), the operations of
// keras_plugin._torch._update_moving in the statistics' dtype S.
template <typename S>
void fold_moving(at::Tensor& moving, const at::Tensor& batch, double momentum) {
  S* m = moving.data_ptr<S>();
  const S* b = batch.data_ptr<S>();
  const S keep = static_cast<S>(momentum);
  const S rate = static_cast<S>(1.0 - momentum);
  const int64_t n = moving.numel();
  for (int64_t i = 0; i < n; i++) {
    S v = m[i] * keep;
    S add = b[i] * rate;
    m[i] = v + add;
  }
}

void check_moving(const at::Tensor& t, const char* name, int64_t n, at::ScalarType sd) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "ckbn: ", name, " must be on the CPU");
  raise(ckbn_native::count_fault("ckbn", name, t.numel(), n));
  TORCH_CHECK_TYPE(t.scalar_type() == sd, "ckbn: ", name, " must be ", sd, " (the statistics' "
                   "dtype), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), "ckbn: ", name, " must be contiguous");
}

struct Saved {
  std::vector<int64_t> axes;
  double eps;
  bool training;
  int64_t act;
  double slope, hi;
  int64_t n_threads;
};

void save_args(AutogradContext* ctx, const Saved& s) {
  ctx->saved_data["axes"] = s.axes;
  ctx->saved_data["eps"] = s.eps;
  ctx->saved_data["training"] = s.training;
  ctx->saved_data["act"] = s.act;
  ctx->saved_data["slope"] = s.slope;
  ctx->saved_data["hi"] = s.hi;
  ctx->saved_data["n_threads"] = s.n_threads;
}

// The backward of both operators: (dx, dscale, doffset) from the saved
// x, scale, offset, mean, var and arguments, `n_args` gradients in all.
variable_list backward_call(AutogradContext* ctx, const variable_list& grads, size_t n_args) {
  int64_t t0 = now_ns();
  variable_list out(n_args);
  if (!grads[0].defined()) return out;
  const variable_list saved = ctx->get_saved_variables();
  const at::Tensor& x = saved[0];
  const std::vector<int64_t> axes = ctx->saved_data["axes"].toIntVector();
  const double eps = ctx->saved_data["eps"].toDouble();
  const bool training = ctx->saved_data["training"].toBool();
  const ckbn_act act = make_act(ctx->saved_data["act"].toInt(),
                                ctx->saved_data["slope"].toDouble(),
                                ctx->saved_data["hi"].toDouble());
  const int64_t n_threads = ctx->saved_data["n_threads"].toInt();
  const at::Tensor dy = grads[0].contiguous();
  int64_t t1 = now_ns();
  TORCH_CHECK_VALUE(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
                    "ckbn: the output gradient has shape ", dy.sizes(), " and dtype ",
                    dy.scalar_type(), "; x has ", x.sizes(), " and ", x.scalar_type());
  ckbn_dims d;
  int64_t n = 0;
  const ckbn_kernel_table* table = prepare(x, axes, eps, n_threads, &d, &n);
  ChannelIn scale, offset, mean, var;
  bind_in(&scale, saved[1], "scale", n);
  bind_in(&offset, saved[2], "offset", n);
  bind_in(&mean, saved[3], "mean", n);
  bind_in(&var, saved[4], "var", n);
  const at::ScalarType sd = stat_type(x.scalar_type());
  int64_t t2 = now_ns();
  at::Tensor dx = at::empty(x.sizes(), x.options());
  at::Tensor dscale_t = per_channel(n, sd), doffset_t = per_channel(n, sd);
  ChannelOut dscale, doffset;
  dscale.bind(dscale_t.data_ptr(), dtype_code(sd), n);
  doffset.bind(doffset_t.data_ptr(), dtype_code(sd), n);
  int64_t t3 = now_ns();
  if (x.numel() == 0) {  // constant statistics, empty batch: zero gradients
    std::fill(dscale.get(), dscale.get() + n, 0.0);
    std::fill(doffset.get(), doffset.get() + n, 0.0);
  } else {
    ok(table->backward(dtype_code(x.scalar_type()), dy.data_ptr(), x.data_ptr(), d,
                       scale.get(), offset.get(), mean.get(), var.get(), eps, training ? 1 : 0,
                       act.on ? &act : nullptr, dx.data_ptr(), dscale.get(), doffset.get(),
                       static_cast<int>(n_threads)),
       "ckbn backward");
  }
  int64_t t4 = now_ns();
  g_calls[2].fetch_add(1, std::memory_order_relaxed);
  dscale.finish();
  doffset.finish();
  out[0] = dx;
  out[1] = dscale_t.to(saved[1].scalar_type());
  out[2] = doffset_t.to(saved[2].scalar_type());
  int64_t t5 = now_ns();
  g_t[0]+=t1-t0; g_t[1]+=t2-t1; g_t[2]+=t3-t2; g_t[3]+=t4-t3; g_t[4]+=t5-t4; g_t[5]++;
  return out;
}

// forward(ctx, ...) is also called with ctx == nullptr where nothing needs a
// gradient: the same computation, nothing saved.
struct CkbnTrain : public torch::autograd::Function<CkbnTrain> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x_in,
                               const at::Tensor& scale_t, const at::Tensor& offset_t,
                               const std::optional<at::Tensor>& moving_mean,
                               const std::optional<at::Tensor>& moving_var, double momentum,
                               at::IntArrayRef axes, double eps, int64_t act_code, double slope,
                               double hi, int64_t n_threads) {
    ckbn_dims d;
    int64_t n = 0;
    const ckbn_kernel_table* table = prepare(x_in, axes, eps, n_threads, &d, &n);
    const ckbn_act act = make_act(act_code, slope, hi);
    TORCH_CHECK_VALUE(d.P * d.R > 0, "ckbn: x is empty (shape ", x_in.sizes(),
                      "); batch normalization needs data");
    ChannelIn scale, offset;
    bind_in(&scale, scale_t, "scale", n);
    bind_in(&offset, offset_t, "offset", n);
    const at::ScalarType sd = stat_type(x_in.scalar_type());
    const bool moving = moving_mean.has_value() && moving_mean->defined();
    TORCH_CHECK_VALUE(moving == (moving_var.has_value() && moving_var->defined()),
                      "ckbn: give both moving_mean and moving_var, or neither");
    if (moving) {
      TORCH_CHECK_VALUE(std::isfinite(momentum), "ckbn: momentum must be finite, got ",
                        momentum);
      check_moving(*moving_mean, "moving_mean", n, sd);
      check_moving(*moving_var, "moving_var", n, sd);
    }
    const at::Tensor x = x_in.contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options());
    at::Tensor mean_t = per_channel(n, sd), var_t = per_channel(n, sd);
    ChannelOut mean, var;
    mean.bind(mean_t.data_ptr(), dtype_code(sd), n);
    var.bind(var_t.data_ptr(), dtype_code(sd), n);
    ok(table->forward_train(dtype_code(x.scalar_type()), x.data_ptr(), d, scale.get(),
                            offset.get(), eps, act.on ? &act : nullptr, y.data_ptr(), mean.get(),
                            var.get(), static_cast<int>(n_threads)),
       "ckbn forward_train");
    g_calls[0].fetch_add(1, std::memory_order_relaxed);
    mean.finish();
    var.finish();
    if (moving) {
      at::Tensor mm = *moving_mean, mv = *moving_var;
      if (sd == at::kDouble) {
        fold_moving<double>(mm, mean_t, momentum);
        fold_moving<double>(mv, var_t, momentum);
      } else {
        fold_moving<float>(mm, mean_t, momentum);
        fold_moving<float>(mv, var_t, momentum);
      }
      torch::autograd::impl::bump_version(mm);
      torch::autograd::impl::bump_version(mv);
    }
    if (ctx != nullptr) {
      ctx->save_for_backward({x, scale_t, offset_t, mean_t, var_t});
      ctx->mark_non_differentiable({mean_t, var_t});
      ctx->set_materialize_grads(false);   // no zero gradients made for mean and var
      save_args(ctx, Saved{std::vector<int64_t>(axes.begin(), axes.end()), eps, true, act_code,
                           slope, hi, n_threads});
    }
    return {y, mean_t, var_t};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return backward_call(ctx, grads, 12);
  }
};

struct CkbnGiven : public torch::autograd::Function<CkbnGiven> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in,
                            const at::Tensor& scale_t, const at::Tensor& offset_t,
                            const at::Tensor& mean_t, const at::Tensor& var_t,
                            at::IntArrayRef axes, double eps, bool train_grad, int64_t act_code,
                            double slope, double hi, int64_t n_threads) {
    ckbn_dims d;
    int64_t n = 0;
    const ckbn_kernel_table* table = prepare(x_in, axes, eps, n_threads, &d, &n);
    const ckbn_act act = make_act(act_code, slope, hi);
    ChannelIn scale, offset, mean, var;
    bind_in(&scale, scale_t, "scale", n);
    bind_in(&offset, offset_t, "offset", n);
    bind_in(&mean, mean_t, "mean", n);
    bind_in(&var, var_t, "var", n);
    const at::Tensor x = x_in.contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options());
    if (x.numel() > 0)
      ok(table->forward_infer(dtype_code(x.scalar_type()), x.data_ptr(), d, scale.get(),
                              offset.get(), mean.get(), var.get(), eps,
                              act.on ? &act : nullptr, y.data_ptr(),
                              static_cast<int>(n_threads)),
         "ckbn forward_infer");
    g_calls[1].fetch_add(1, std::memory_order_relaxed);
    // Copies of the statistics: the gradient is that of the values used here,
    // whatever later in-place updates do to mean_t and var_t.
    if (ctx != nullptr) {
      ctx->save_for_backward({x, scale_t, offset_t, mean_t.detach().clone(),
                              var_t.detach().clone()});
      save_args(ctx, Saved{std::vector<int64_t>(axes.begin(), axes.end()), eps, train_grad,
                           act_code, slope, hi, n_threads});
    }
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return backward_call(ctx, grads, 12);
  }
};

// Whether autograd records a call on these inputs; where it does not, the
// operators compute without an autograd node (no saved tensors either).
bool needs_grad(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& offset) {
  return at::GradMode::is_enabled() &&
         (x.requires_grad() || scale.requires_grad() || offset.requires_grad());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_train(
    const at::Tensor& x, const at::Tensor& scale, const at::Tensor& offset,
    const std::optional<at::Tensor>& moving_mean, const std::optional<at::Tensor>& moving_var,
    double momentum, at::IntArrayRef axes, double eps, int64_t act, double slope, double hi,
    int64_t n_threads) {
  variable_list out =
      needs_grad(x, scale, offset)
          ? CkbnTrain::apply(x, scale, offset, moving_mean, moving_var, momentum, axes, eps, act,
                             slope, hi, n_threads)
          : CkbnTrain::forward(nullptr, x, scale, offset, moving_mean, moving_var, momentum, axes,
                               eps, act, slope, hi, n_threads);
  return {out[0], out[1], out[2]};
}

at::Tensor bn_given(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& offset,
                    const at::Tensor& mean, const at::Tensor& var, at::IntArrayRef axes,
                    double eps, bool train_grad, int64_t act, double slope, double hi,
                    int64_t n_threads) {
  if (!needs_grad(x, scale, offset))
    return CkbnGiven::forward(nullptr, x, scale, offset, mean, var, axes, eps, train_grad, act,
                              slope, hi, n_threads);
  return CkbnGiven::apply(x, scale, offset, mean, var, axes, eps, train_grad, act, slope, hi,
                          n_threads);
}

}  // namespace

// The autograd node is recorded by the operator itself (the Autograd key);
// the operators have no kernel for other keys (CPU tensors only, eager mode:
// under torch.compile keras_plugin._torch uses its Python custom ops).
TORCH_LIBRARY(ckbn_probe2, m) {
  m.def(
      "bn_train(Tensor x, Tensor scale, Tensor offset, Tensor(a!)? moving_mean, "
      "Tensor(b!)? moving_var, float momentum, int[] axes, float eps, int act, float slope, "
      "float hi, int n_threads) -> (Tensor, Tensor, Tensor)");
  m.def(
      "bn_given(Tensor x, Tensor scale, Tensor offset, Tensor mean, Tensor var, int[] axes, "
      "float eps, bool train_grad, int act, float slope, float hi, int n_threads) -> Tensor");
}

TORCH_LIBRARY_IMPL(ckbn_probe2, Autograd, m) {
  m.impl("bn_train", bn_train);
  m.impl("bn_given", bn_given);
}

TORCH_LIBRARY_IMPL(ckbn_probe2, CPU, m) {
  m.impl("bn_train", bn_train);
  m.impl("bn_given", bn_given);
}

// Hands the library the kernel table (the variant ckbn dispatched to);
// returns -1 when the table's ABI is not this header's.
extern "C" __attribute__((visibility("default"))) int ckbn_native_set_table(
    const ckbn_kernel_table* table) {
  if (!ckbn_native::table_usable(table)) return -1;
  g_table.store(table, std::memory_order_release);
  return 0;
}

extern "C" __attribute__((visibility("default"))) int64_t probe_t(int i){ int64_t v=g_t[i]; return v;}
extern "C" __attribute__((visibility("default"))) void probe_reset(){ for(int i=0;i<8;i++) g_t[i]=0;}
// Kernel runs of forward_train (0), forward_infer (1) and backward (2).
extern "C" __attribute__((visibility("default"))) int64_t ckbn_native_calls(int which) {
  if (which < 0 || which > 2) return -1;
  return g_calls[which].load(std::memory_order_relaxed);
}
