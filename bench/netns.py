"""Ray binds every interface and rewrites 127.0.0.1 to the machine's address: run Ray work in a loopback-only network
namespace (``unshare -n``, root or a user namespace), re-executing the current command there."""

from __future__ import annotations

import os
import shlex
import socket
import sys


def loopback_only() -> bool:
    """Whether this process sees no network interface but ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def reexec_in_netns() -> None:
    """Re-run ``sys.argv`` inside a new loopback-only network namespace, unless already in one (never returns then)."""
    if loopback_only():
        return
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.orig_argv[1:]])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.execvp("unshare", ["unshare", "-n", "bash", "-c", f"ip link set lo up && exec {command}"])
