"""Ray Serve autoscaling policy on the load modelport replicas report (stdlib only: Serve pickles this module into
its controller).

Requests reach the replicas straight from the kernel (``SO_REUSEPORT``), not through Serve's proxy or handles, so
Serve's own request counts are empty. Each replica's ``record_autoscaling_stats`` reports ``ongoing`` (HTTP requests
in progress); Serve averages it per replica over ``look_back_period_s`` and this policy asks for
``sum / target_ongoing_requests`` replicas. Serve's wrapper then applies ``min_replicas``/``max_replicas``, the up and
down delays, and the cold start from zero (a request queued at a handle: the driver's wake-up listener).
"""

from __future__ import annotations

from typing import Any


def ongoing_requests(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Replicas wanted for the reported ongoing requests (``ctx`` is Serve's ``AutoscalingContext``)."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    metrics = ctx.aggregated_metrics or {}
    ongoing = sum(metrics.get("ongoing", {}).values()) + ctx.total_num_requests  # handles: the wake-up path
    target = ctx.config.get_target_ongoing_requests()
    return ongoing / target, {}
