"""Start, watch and stop the servers under test: modelport, ``mlflow models serve`` and the bare echo endpoint.

Each server is a child process (its own session, so its whole process tree can be stopped); server CPU is read from
``/proc/<pid>/stat`` (utime + stime, every thread) summed over the process tree, so ``mlflow models serve``'s uvicorn
child counts too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid``'s process tree (all threads)."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / _TICK


@dataclass
class Server:
    """One server process under test.

    Attributes:
        name: Short name used in the table (``modelport``, ``mlflow``, ``echo``).
        argv: Command line.
        port: Where it listens on 127.0.0.1.
        ready_path: ``GET`` path answering 200 once it serves.
        env: Extra environment.
        log: File receiving its stdout and stderr.
    """

    name: str
    argv: list[str]
    port: int
    ready_path: str = "/ping"
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 180.0) -> float:
        """Start the process and wait until ``ready_path`` answers 200; return the seconds it took."""
        started = time.perf_counter()
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            self.argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)  # bench code, not a test: polling a child process is the only way to see it ready
        self.stop()
        raise TimeoutError(f"{self.name} was not ready within {timeout_s}s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = os.getpgid(self.process.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def modelport(state_dir: Path, model: str, port: int, *, log: Path | None = None, **env: str) -> Server:
    """``modelport serve <model>`` on the demo registry in ``state_dir`` (MCP door included, as a user runs it)."""
    argv = [str(BIN / "modelport"), "serve", model, "--state-dir", str(state_dir), "--port", str(port)]
    return Server("modelport", argv, port, env={"MODELPORT_LOG_FORMAT": "json", **env}, log=log)


def mlflow_serve(state_dir: Path, model: str, port: int, *, log: Path | None = None) -> Server:
    """``mlflow models serve -m <model> --env-manager local`` (one worker, its default)."""
    argv = [str(BIN / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1",
            "-p", str(port)]  # fmt: skip
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{state_dir}/mlflow.db", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return Server("mlflow", argv, port, env=env, log=log)


def echo(port: int, *, log: Path | None = None) -> Server:
    """The bare ASGI echo endpoint (``bench/echo_app.py``) under uvicorn, access log off."""
    argv = [str(BIN / "uvicorn"), "bench.echo_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return Server("echo", argv, port, ready_path="/", log=log)
