"""The serving policy: which registry models may be loaded on demand.

``listed`` (the default) serves only what the configuration lists (plus what Databricks-style endpoints name);
``registry`` serves any registered version or alias on its first request, optionally narrowed by name patterns and
tags. The policy is checked before anything is loaded; the tag check needs the resolved version.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from server.settings import PolicySettings


class ServingPolicy:
    """Decides whether a model may be loaded on demand.

    Args:
        settings: mode, name patterns and required tags.
    """

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings or PolicySettings()

    @property
    def on_demand(self) -> bool:
        """Whether versions not listed in the configuration may be loaded when first asked for."""
        return self.settings.mode == "registry"

    @property
    def needs_tags(self) -> bool:
        """Whether ``allows_tags`` must be checked (a resolved version is needed for that)."""
        return bool(self.settings.tags)

    def allows_name(self, name: str) -> bool:
        """Whether a registered model name may be loaded on demand."""
        return self.on_demand and any(fnmatch.fnmatchcase(name, pattern) for pattern in self.settings.names)

    def allows_tags(self, tags: Mapping[str, str]) -> bool:
        """Whether a version with these tags (its own overlaid on its registered model's) may be served."""
        return all(key in tags and (want == "*" or tags[key] == want) for key, want in self.settings.tags.items())

    def describe(self) -> str:
        """One line for error messages and logs."""
        if not self.on_demand:
            return "policy 'listed': only the configured deployments are served"
        tags = ", ".join(f"{k}={v}" for k, v in sorted(self.settings.tags.items()))
        return f"policy 'registry': names {list(self.settings.names)}" + (f", tags {tags}" if tags else "")
