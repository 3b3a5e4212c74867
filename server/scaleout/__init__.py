"""Replicas of the whole server: ``modelport serve --ray [ADDRESS]`` (Ray Serve) and ``--workers N`` (processes).

Each replica is a complete modelport process built by ``server.main.build`` (the same InferenceService, batchers and
converted ONNX models, no second inference path) serving its own HTTP app on a socket bound with ``SO_REUSEPORT`` to
the one shared port: the kernel balances connections across the replicas of a node, so no proxy sits on the request
path. Ray Serve only manages the replicas: placement (CPUs, GPUs), health, autoscaling on the load each replica
reports, rolling and replacement. docs/scaling.md has the measurements behind this choice.

Modules: ``plan`` (settings and Databricks workload sizes → replica counts and Serve options; no Ray), ``policy``
(the Serve autoscaling policy; stdlib only, pickled into Serve's controller), ``replica`` (one replica's HTTP
server; no Ray), ``workers`` (``--workers N`` without Ray), ``ray_serve`` (the Serve deployment and the driver; the
only module importing ``ray``, imported only by ``serve --ray``), ``wake`` (the driver's listener while no replica
runs).
"""
