"""Settings, read once at the entry point (env ``MODELPORT_*``, CLI flags, optional YAML) and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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


class DeploymentSpec(BaseModel):
    """One model to serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """``models:/name/3`` or ``models:/name@alias``."""
    batching: BatchingSettings | None = None


class PolicySettings(BaseModel):
    """Which models may be served (see ``server/policy.py``)."""

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
    max_rows: int = 100_000
    """Rows per REST request (413 above it)."""
    max_tool_rows: int = 100
    """Rows per MCP tool call (``maxItems``); bulk scoring belongs on REST."""
    log_format: Literal["auto", "console", "json"] = "auto"
    """auto: console on a terminal, JSON otherwise."""
    log_level: str = "INFO"
    mcp_allowed_hosts: tuple[str, ...] = ("127.0.0.1:*", "localhost:*", "[::1]:*")
    mcp_allowed_origins: tuple[str, ...] = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
    policy: PolicySettings = PolicySettings()
    """Which models may be served: the listed ones, or any registry version (loaded on demand)."""
    cache: CacheSettings = CacheSettings()
    promotion: PromotionSettings = PromotionSettings()

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        return tuple(v for v in value.split(",") if v) if isinstance(value, str) else value

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or f"sqlite:///{self.state_dir.resolve()}/mlflow.db"

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or self.effective_registry_uri

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

    def all_deployments(self) -> list[DeploymentSpec]:
        """Deployments from the config file, then bare model URIs not already listed."""
        specs = list(self.deployments)
        listed = {d.model for d in specs}
        specs += [DeploymentSpec(model=m) for m in self.models if m not in listed]
        return specs

    def batching_for(self, spec: DeploymentSpec) -> BatchingSettings:
        return spec.batching or self.batching


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
