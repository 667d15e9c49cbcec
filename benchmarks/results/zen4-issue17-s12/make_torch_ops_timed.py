"""Session 12: writes torch_ops_timed.cc, keras_plugin/native/torch_ops.cc with
steady_clock marks around the pieces of the backward node (registered as
ckbn_probe2, with probe_t/probe_reset to read the sums), into OUT_DIR, beside a
copy of ckbn_native.h; then build it as keras_plugin/_torch_native.py does:
  python make_torch_ops_timed.py OUT_DIR
  g++ -shared -fPIC -O3 -std=c++20 -D_GLIBCXX_USE_CXX11_ABI=1 -I<ckbn/include> -IOUT_DIR \\
      -I<torch>/include -I<torch>/include/torch/csrc/api/include OUT_DIR/torch_ops_timed.cc \\
      -o OUT_DIR/libp.so -L<torch>/lib -lc10 -ltorch_cpu -ltorch
(backward_pieces.py loads /tmp/s12/tprobe/libp.so)."""
import os, shutil, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
native = os.path.join(ROOT, "keras_plugin", "native")
shutil.copy(os.path.join(native, "ckbn_native.h"), out)
s = open(os.path.join(native, "torch_ops.cc")).read()
EDITS = [
    ('#include <atomic>', '#include <atomic>\n#include <chrono>\nstatic inline int64_t now_ns()'
     '{return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::'
     'now().time_since_epoch()).count();}\nint64_t g_t[8];'),
    ('  variable_list out(n_args);\n  if (!grads[0].defined()) return out;',
     '  int64_t t0 = now_ns();\n  variable_list out(n_args);\n  if (!grads[0].defined()) return out;'),
    ('  const at::Tensor dy = grads[0].contiguous();',
     '  const at::Tensor dy = grads[0].contiguous();\n  int64_t t1 = now_ns();'),
    ('  const at::ScalarType sd = stat_type(x.scalar_type());\n  at::Tensor dx = at::empty(',
     '  const at::ScalarType sd = stat_type(x.scalar_type());\n  int64_t t2 = now_ns();\n'
     '  at::Tensor dx = at::empty('),
    ('  if (x.numel() == 0) {  // constant statistics, empty batch: zero gradients',
     '  int64_t t3 = now_ns();\n  if (x.numel() == 0) {  // constant statistics, empty batch: '
     'zero gradients'),
    ('  g_calls[2].fetch_add(1, std::memory_order_relaxed);\n  dscale.finish();',
     '  int64_t t4 = now_ns();\n  g_calls[2].fetch_add(1, std::memory_order_relaxed);\n'
     '  dscale.finish();'),
    ('  out[2] = doffset_t.to(saved[2].scalar_type());\n  return out;',
     '  out[2] = doffset_t.to(saved[2].scalar_type());\n  int64_t t5 = now_ns();\n'
     '  g_t[0]+=t1-t0; g_t[1]+=t2-t1; g_t[2]+=t3-t2; g_t[3]+=t4-t3; g_t[4]+=t5-t4; g_t[5]++;\n'
     '  return out;'),
    ('// Kernel runs of forward_train (0)',
     'extern "C" __attribute__((visibility("default"))) int64_t probe_t(int i){ return g_t[i]; }\n'
     'extern "C" __attribute__((visibility("default"))) void probe_reset()'
     '{ for(int i=0;i<8;i++) g_t[i]=0; }\n// Kernel runs of forward_train (0)'),
    ('TORCH_LIBRARY(ckbn_native, m)', 'TORCH_LIBRARY(ckbn_probe2, m)'),
    ('TORCH_LIBRARY_IMPL(ckbn_native, Autograd', 'TORCH_LIBRARY_IMPL(ckbn_probe2, Autograd'),
    ('TORCH_LIBRARY_IMPL(ckbn_native, CPU', 'TORCH_LIBRARY_IMPL(ckbn_probe2, CPU'),
]
for old, new in EDITS:
    assert s.count(old) == 1, old
    s = s.replace(old, new)
open(os.path.join(out, "torch_ops_timed.cc"), "w").write(s)
