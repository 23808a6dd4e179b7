# -*- coding: utf-8 -*-
"""Callback plugin for tests/bench: at exit, writes the CPU seconds of ansible-playbook's main process (the
strategy loop that queues tasks, receives every result and runs the callbacks) to $DESKGUARD_BENCH_CPU_FILE,
so the bench can split the controller's CPU into the main process and its workers + ssh clients."""

from __future__ import annotations

import atexit
import os
import resource

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: bench_cpu
type: aggregate
short_description: Write the main process's CPU time at exit (deskguard benchmarks only)
description: Writes user + system CPU seconds of ansible-playbook's own process to $DESKGUARD_BENCH_CPU_FILE.
"""


def _write(path: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "w") as f:
        f.write(f"{usage.ru_utime + usage.ru_stime}\n")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_cpu"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        path = os.environ.get("DESKGUARD_BENCH_CPU_FILE")
        if path:
            pid = os.getpid()
            # Forked workers inherit atexit handlers but leave through os._exit; the check is belt and braces.
            atexit.register(lambda: os.getpid() == pid and _write(path))
