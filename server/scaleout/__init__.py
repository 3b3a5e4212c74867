"""Replicas of the whole server: ``modelport serve --ray [ADDRESS]`` (Ray Serve) and ``--workers N`` (processes).

Each replica is a complete modelport process built by ``server.main.build`` (the same InferenceService, batchers and
converted ONNX models, no second inference path) serving its own HTTP app. Under ``--ray`` the driver runs an
HAProxy front on the public port (retries on a lost replica, per-model and per-endpoint applications, merged
``/metrics``), or with ``ingress: direct`` the replicas share the port with ``SO_REUSEPORT``; Ray Serve manages the
replicas: placement (CPUs, GPUs), health, autoscaling on the load each replica reports, rolling and replacement.
docs/scaling.md has the measurements behind these choices.

Modules (only ``ray_serve`` imports ``ray``, and only ``serve --ray`` imports it): ``units`` (what runs as which
Serve application), ``plan`` (settings and Databricks workload sizes → replica counts and Serve options),
``policy`` (the Serve autoscaling policy; stdlib only, pickled into Serve's controller), ``replica`` (one replica's
HTTP server), ``directory`` (where replicas listen, and the events they pass on), ``front`` (HAProxy: configuration
and runtime API), ``keeper`` (the driver's loop: the front in step with the replicas and the units with the
endpoints), ``driver`` (the driver's private app: merged ``/metrics``, wake-ups), ``metrics`` (the merge), ``wake``
(the wake listener), ``workers`` (``--workers N`` without Ray), ``ray_serve`` (the Serve deployment, its beat and
``RayCluster``).
"""
