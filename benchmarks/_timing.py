"""Timing helpers shared by the benchmark scripts: round-robin timing and the CPU.

Scripts run as ``python benchmarks/<script>.py``, so ``benchmarks/`` is on
``sys.path`` and they ``import _timing``.

* :func:`round_robin` times each of several callables in turn, round after
  round, so that a change in the machine's load (other jobs on a shared
  machine) hits every variant alike; :func:`medians` and :func:`minimums`
  reduce its samples.
* :func:`cpu_info` and :func:`cpu_line` describe the CPU the numbers come
  from (vendor, model, ISA flags, caches, cores, load average), which every
  result records.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

__all__ = ["round_robin", "medians", "minimums", "cpu_model", "cpu_info", "cpu_line"]


def round_robin(fns, repeat, warmup=2, inner=1):
    """Seconds per call of each ``fns[name]()``: ``{name: [sample, ...]}``.

    Every callable first runs ``warmup`` times (compilation, caches); then
    ``repeat`` rounds each time every callable in turn, a sample being the
    mean over ``inner`` back-to-back calls (use ``inner > 1`` for calls near
    the timer's resolution).
    """
    if repeat < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"repeat and inner must be >= 1 and warmup >= 0, got "
                         f"repeat={repeat!r}, inner={inner!r}, warmup={warmup!r}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return times


def medians(times):
    """``{name: median seconds}`` of :func:`round_robin`'s samples."""
    return {name: statistics.median(v) for name, v in times.items()}


def minimums(times):
    """``{name: least seconds}`` of :func:`round_robin`'s samples."""
    return {name: min(v) for name, v in times.items()}


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
        "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu_info():
    """The CPU the numbers come from: vendor, model (name, family and number),
    ISA flags, caches (sysfs, per instance), cores, load."""
    info = {"model": cpu_model(), "vendor": "unknown", "logical_cores": os.cpu_count(),
            "isa": [], "caches": {}}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "vendor_id":
                info["vendor"] = value.strip()
            elif key == "cpu family":
                info["family"] = value.strip()
            elif key == "model":
                info["model_number"] = value.strip()
            elif key in ("flags", "Features"):
                flags = set(value.split())
                info["isa"] = [f for f in _ISA if f in flags]
                break
    except OSError:
        pass
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue

            def read(name, entry=entry):
                with open(os.path.join(base, entry, name)) as f:
                    return f.read().strip()

            kind = read("type")
            name = f"L{read('level')}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
            info["caches"][name] = read("size")
    except OSError:
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def cpu_line(info=None):
    """One line naming the CPU (``# CPU: ...``), for the head of a result."""
    info = cpu_info() if info is None else info
    caches = " ".join(f"{k} {v}" for k, v in info["caches"].items())
    fam = (f" (family {info['family']}, model {info['model_number']})"
           if "family" in info and "model_number" in info else "")
    return (f"# CPU: {info['vendor']} {info['model']}{fam}, {info['logical_cores']} logical cores, "
            f"ISA {' '.join(info['isa'])}, caches (per instance) {caches}; "
            f"load average {' '.join(f'{x:.1f}' for x in info.get('load_average', ()))}")
