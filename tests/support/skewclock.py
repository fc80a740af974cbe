"""Run a module as on a host whose wall clock is off: ``python -m tests.support.skewclock SECONDS MODULE ARGS...``.

``time.time`` (and ``time.time_ns``) read ``SECONDS`` ahead of the host's clock, negative for behind; the
monotonic clock is left as it is, as setting a host's clock leaves it. Swarm reads the wall clock through
``time.time`` only. (libfaketime would shift the C library's clocks instead, but under it Python's
``time.sleep`` fails with EINVAL or hangs.)
"""
import runpy
import sys
import time


def main() -> None:
    offset = float(sys.argv[1])
    real, real_ns = time.time, time.time_ns
    time.time = lambda: real() + offset
    time.time_ns = lambda: real_ns() + int(offset * 1e9)
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
