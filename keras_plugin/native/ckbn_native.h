// ckbn_native.h -- the framework-neutral half of ckbn's native ops.
//
// tf_ops.cc (TensorFlow ops) and xla_ffi.cc (XLA FFI handlers) both call
// ckbn's C-level kernel table (ckbn_kernels.h).  What they share lives here,
// written once, with no framework type in it:
//
//   * Fault: an error kind plus its message; each framework turns it into
//     its own error (tensorflow::Status, xla::ffi::Error) in one small
//     function of its file;
//   * status_fault: the table's status code -> Fault (the one message table);
//   * data_fault: the table, the data dtype code and float16 support;
//   * the layout: a channel-axes list -> bit mask (axes_mask), a shape and
//     mask -> (P, G, R, C) through ckbn_layout (layout_of), or given
//     (P, G, R, C) checked against an element count (dims_of);
//   * ChannelIn / ChannelOut: a per-channel array as the table's float64,
//     zero-copy when it is float64, widened (in) or rounded back (out) when
//     it is float32.
//
// So a handler reads: validate (these helpers) -> one table call -> map the
// status.  Everything here is inline; the header is part of the native build
// cache key (keras_plugin/_native_build.py hashes every header beside the
// sources).

#ifndef CKBN_NATIVE_H
#define CKBN_NATIVE_H

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ckbn_kernels.h"

namespace ckbn_native {

// What went wrong, framework-neutral; each file maps it to its error codes.
enum class Kind {
  kOk,
  kInvalid,      // a bad argument (shape, dtype, attribute)
  kNoMemory,     // a scratch allocation failed
  kUnsupported,  // valid, but these kernels do not have it (float16 without F16C)
  kNotReady,     // the kernel table was not handed over
  kInternal      // an unknown kernel status
};

struct Fault {
  Kind kind = Kind::kOk;
  std::string message;
  bool ok() const { return kind == Kind::kOk; }
};

inline Fault fail(Kind kind, std::string message) { return Fault{kind, std::move(message)}; }

// The one message table for the kernel table's status codes; `what` names
// the call (the op or handler and the entry), e.g. "ckbn_bn_train".
inline Fault status_fault(int status, const char* what) {
  switch (status) {
    case CKBN_OK:
      return Fault{};
    case CKBN_ERR_NOMEM:
      return fail(Kind::kNoMemory, std::string(what) + ": out of memory for scratch buffers");
    case CKBN_ERR_ARG:
      return fail(Kind::kInvalid,
                  std::string(what) + ": bad dimensions (negative, or an empty reduction)");
    case CKBN_ERR_DTYPE:
      return fail(Kind::kUnsupported,
                  std::string(what) + ": data type not supported by these kernels");
    default:
      return fail(Kind::kInternal,
                  std::string(what) + ": kernel status " + std::to_string(status));
  }
}

// The table is set and takes data of dtype code `dtype` (-1: not a float
// type the table knows).
inline Fault data_fault(const ckbn_kernel_table* table, int dtype, const char* what) {
  if (table == nullptr)
    return fail(Kind::kNotReady, std::string(what) +
                                     ": the ckbn kernel table is not set (keras_plugin hands it "
                                     "over with ckbn_native_set_table when it loads this library)");
  if (dtype < 0)
    return fail(Kind::kInvalid, std::string(what) + ": data must be float16, float32 or float64");
  if (dtype == CKBN_FLOAT16 && !table->has_float16)
    return fail(Kind::kUnsupported, std::string(what) + ": these kernels have no float16 support");
  return Fault{};
}

// Whether `table` is one this library can use (ckbn_native_set_table).
inline bool table_usable(const ckbn_kernel_table* table) {
  return table != nullptr && table->abi == CKBN_TABLE_ABI;
}

// "[d0,d1,...]": a shape as TensorFlow's TensorShape::DebugString writes it.
inline std::string shape_text(const int64_t* shape, int ndim) {
  std::string s = "[";
  for (int i = 0; i < ndim; i++) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// A list of channel axes as a bit mask (bit a: axis a) and its largest axis.
inline Fault axes_mask(const std::vector<int64_t>& axes, uint64_t* mask, int* max_axis) {
  if (axes.empty()) return fail(Kind::kInvalid, "channel_axes is empty");
  *mask = 0;
  *max_axis = -1;
  for (int64_t a : axes) {
    if (a < 0 || a >= 64)
      return fail(Kind::kInvalid, "channel_axes must be in [0, 64), got " + std::to_string(a));
    if ((*mask >> a) & 1u)
      return fail(Kind::kInvalid, "channel_axes has axis " + std::to_string(a) + " twice");
    *mask |= uint64_t{1} << a;
    if (a > *max_axis) *max_axis = static_cast<int>(a);
  }
  return Fault{};
}

// (P, G, R, C) of an array of rank `ndim` and `shape` whose channel axes are
// `mask` (largest `max_axis`), from ckbn_layout; fails when an axis is out of
// range or the axes need a transpose.
inline Fault layout_of(const int64_t* shape, int ndim, uint64_t mask, int max_axis,
                       ckbn_dims* d) {
  if (max_axis >= ndim)
    return fail(Kind::kInvalid, "channel axis " + std::to_string(max_axis) +
                                    " is out of range for x of rank " + std::to_string(ndim) +
                                    " (shape " + shape_text(shape, ndim) + ")");
  if (ckbn_layout(ndim, shape, mask, d) != 0)
    return fail(Kind::kInvalid, "channel_axes need a transpose for x of shape " +
                                    shape_text(shape, ndim) +
                                    "; this op takes channels in place only");
  return Fault{};
}

// Given (P, G, R, C) (computed by the caller from static shapes) checked
// against the data's element count.
inline Fault dims_of(const char* what, int64_t P, int64_t G, int64_t R, int64_t C,
                     int64_t count, ckbn_dims* d) {
  if (P < 0 || G < 0 || R < 0 || C < 0 || count != P * G * R * C)
    return fail(Kind::kInvalid, std::string(what) + ": layout (" + std::to_string(P) + ", " +
                                    std::to_string(G) + ", " + std::to_string(R) + ", " +
                                    std::to_string(C) + ") does not match " +
                                    std::to_string(count) + " elements");
  *d = ckbn_dims{static_cast<ptrdiff_t>(P), static_cast<ptrdiff_t>(G),
                 static_cast<ptrdiff_t>(R), static_cast<ptrdiff_t>(C)};
  return Fault{};
}

// A per-channel array has n values.
inline Fault count_fault(const char* what, const char* name, int64_t count, int64_t n) {
  if (count == n) return Fault{};
  return fail(Kind::kInvalid, std::string(what) + ": " + name + " has " +
                                  std::to_string(count) + " values, expected " +
                                  std::to_string(n));
}

inline Fault channel_type_fault(const char* what, const char* name) {
  return fail(Kind::kInvalid, std::string(what) + ": " + name + " must be float32 or float64");
}

// Per-channel float64 staging: up to kInlineChannels values live in the
// object itself, so the common layer widths cost no heap allocation per call;
// wider layers use a vector.  (Objects of these classes stay where they are
// declared: they hold pointers into themselves.)
constexpr int64_t kInlineChannels = 256;

// A per-channel input as float64: the array itself when it is float64
// (dtype CKBN_FLOAT64), else a widened copy of its float32 values.
class ChannelIn {
 public:
  ChannelIn() = default;
  ChannelIn(const ChannelIn&) = delete;
  ChannelIn& operator=(const ChannelIn&) = delete;
  // False for a dtype other than float32/float64.
  bool bind(const void* data, int dtype, int64_t n) {
    if (dtype == CKBN_FLOAT64) {
      ptr_ = static_cast<const double*>(data);
      return true;
    }
    if (dtype != CKBN_FLOAT32) return false;
    const float* src = static_cast<const float*>(data);
    double* dst = inline_;
    if (n > kInlineChannels) {
      store_.resize(static_cast<size_t>(n));
      dst = store_.data();
    }
    for (int64_t i = 0; i < n; i++) dst[i] = static_cast<double>(src[i]);
    ptr_ = dst;
    return true;
  }
  const double* get() const { return ptr_; }

 private:
  const double* ptr_ = nullptr;
  double inline_[kInlineChannels];
  std::vector<double> store_;
};

// A per-channel output the kernels write in float64: the array itself when
// it is float64, else a buffer that finish() rounds into the float32 array.
class ChannelOut {
 public:
  ChannelOut() = default;
  ChannelOut(const ChannelOut&) = delete;
  ChannelOut& operator=(const ChannelOut&) = delete;
  bool bind(void* data, int dtype, int64_t n) {
    data_ = data;
    dtype_ = dtype;
    n_ = n;
    if (dtype == CKBN_FLOAT64) {
      ptr_ = static_cast<double*>(data);
      return true;
    }
    if (dtype != CKBN_FLOAT32) return false;
    ptr_ = inline_;
    if (n > kInlineChannels) {
      store_.resize(static_cast<size_t>(n));
      ptr_ = store_.data();
    }
    return true;
  }
  double* get() const { return ptr_; }
  // Rounds the float64 results into a float32 array (nothing for float64).
  void finish() {
    if (dtype_ != CKBN_FLOAT32) return;
    float* dst = static_cast<float*>(data_);
    for (int64_t i = 0; i < n_; i++) dst[i] = static_cast<float>(ptr_[i]);
  }

 private:
  void* data_ = nullptr;
  int dtype_ = -1;
  int64_t n_ = 0;
  double* ptr_ = nullptr;
  double inline_[kInlineChannels];
  std::vector<double> store_;
};

// The table's activation for the attributes (on, slope, hi); the table
// takes NULL for none.
inline ckbn_act make_act(bool on, double slope, double hi) {
  return ckbn_act{on ? 1 : 0, slope, hi};
}

}  // namespace ckbn_native

#endif  // CKBN_NATIVE_H
