"""Model references: ``models:/name/3``, ``models:/name@alias`` and their parts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidModelURI

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_\-]+))$")
_VERSION = re.compile(r"^\d+$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A registered model version or alias. Exactly one of ``version`` and ``alias`` is set."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if (self.version is None) == (self.alias is None):
            raise InvalidModelURI(f"model reference {self.name!r} needs exactly one of version or alias")

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        """Parse ``models:/name/3`` or ``models:/name@alias``."""
        match = _URI.match(uri.strip())
        if match is None:
            raise InvalidModelURI(
                f"{uri!r} is not a model URI; expected models:/<name>/<version> or models:/<name>@<alias>"
            )
        return cls(match["name"], match["version"], match["alias"])

    @classmethod
    def from_path(cls, name: str, version_or_alias: str) -> ModelRef:
        """Build a reference from the two path segments of ``/model/{name}/{version_or_alias}``."""
        if _VERSION.match(version_or_alias):
            return cls(name, version=version_or_alias)
        return cls(name, alias=version_or_alias.lstrip("@"))

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else f"models:/{self.name}@{self.alias}"

    def __str__(self) -> str:
        return self.uri
