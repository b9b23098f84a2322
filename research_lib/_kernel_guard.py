"""A notebook kernel and the command that starts it (`spartan trade`, `spartan run`).

- **The kernel dies with the command.** Kernels are started as ``python -m
  research_lib._kernel_guard <command pid> <kernel command...>`` (`guarded_command`): this
  module asks Linux to SIGKILL it when the thread that started it ends (``PR_SET_PDEATHSIG``,
  kept across ``execve`` for a program that is not set-uid), exits if the command already
  ended, then replaces itself with the kernel. It replaces a ``preexec_fn``, which is not safe
  in a process that runs threads (zmq's). Elsewhere than on Linux the command runs unchanged.
- **What the command is doing**, for a kernel that must stop sending orders when it is gone
  and wait while it is stopped (`command_pid`, `process_state`; used by
  `research_lib.trading._cycle`), and for the clean-up of the files of killed kernels
  (`research_lib.pipeline.remove_orphaned_kernel_files`, with `pid_max`).

Only the standard library: this module runs before the kernel's program starts.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Literal

PARENT_PID_ENV = "JPY_PARENT_PID"  # set by jupyter_client in each kernel it starts: the starting process
PROCESS_STATES = ("running", "stopped", "gone")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PID_MAX_FILE = "/proc/sys/kernel/pid_max"
_PID_MAX_LIMIT = 1 << 22  # Linux's largest possible pid_max (PID_MAX_LIMIT on 64-bit)


def guarded_command(kernel_cmd: list[str], command_pid: int) -> list[str]:
    """The command line that starts ``kernel_cmd`` as a kernel that dies with ``command_pid``
    (Linux), or ``kernel_cmd`` itself elsewhere."""
    if not sys.platform.startswith("linux"):
        return list(kernel_cmd)
    return [sys.executable, "-m", __name__, str(command_pid), *kernel_cmd]


def main(argv: list[str]) -> None:
    """``<command pid> <kernel command...>``: die with the command, then become the kernel."""
    command, kernel = int(argv[0]), argv[1:]
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        sys.exit(f"research_lib._kernel_guard: prctl(PR_SET_PDEATHSIG) failed (errno {ctypes.get_errno()})")
    if os.getppid() != command:  # the command ended before the request above could take effect
        os._exit(1)
    os.execvp(kernel[0], kernel)


def command_pid() -> int | None:
    """In a notebook kernel, the pid of the process that started it (``JPY_PARENT_PID``), or
    None: not in a kernel (the scheduler, a script, a test), or no such pid was passed."""
    kernelapp = sys.modules.get("ipykernel.kernelapp")
    starter = os.environ.get(PARENT_PID_ENV, "")
    if kernelapp is None or not kernelapp.IPKernelApp.initialized() or not (starter.isascii() and starter.isdigit()):
        return None
    return int(starter)


def process_state(pid: int) -> Literal["running", "stopped", "gone"]:
    """Whether process ``pid`` runs, is stopped (Ctrl-Z, SIGSTOP, a debugger) or is gone (never
    existed, exited, or a zombie: exited but not yet reaped). Another user's process exists.
    Without ``/proc`` (macOS) a process that exists counts as running."""
    if not 0 < pid <= pid_max():
        return "gone"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:  # another user's process: it exists
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):  # no /proc, or it exited meanwhile
        return "running"
    if state in (b"Z", b"X"):
        return "gone"
    return "stopped" if state in (b"T", b"t") else "running"


def pid_max() -> int:
    """The largest pid this system hands out (``/proc/sys/kernel/pid_max``; 2**22 elsewhere)."""
    try:
        with open(_PID_MAX_FILE) as limit:
            return int(limit.read().strip())
    except (OSError, ValueError):
        return _PID_MAX_LIMIT


if __name__ == "__main__":
    main(sys.argv[1:])
