"""Switch single performance measures on or off in a modelport process, for A/B runs (bench/ab.py).

Loaded by Python at start-up when this directory is on ``PYTHONPATH``; reads ``MODELPORT_BENCH_TOGGLES``, a
comma-separated list of:

* ``no-gc-freeze``: ``gc.freeze()`` does nothing (the startup heap stays in the cyclic GC's sight);
* ``no-fast-path``: scoring requests go through the FastAPI stack instead of the ASGI fast path;
* ``no-small-decode``: short numeric JSON columns go through numpy like long ones;
* ``fast-access-log``: the access log goes through ``server.accesslog.JsonLinesHandler`` (JSON format);
* ``single-write``: uvicorn serves with ``server.rest.protocol.SingleWriteProtocol``;
* ``no-spin``: onnxruntime's intra-op threads do not spin-wait between runs (the default since step 6);
* ``spin``: they do (onnxruntime's own default);
* ``no-inline``: every batch runs on the batcher's worker thread, cheap ones too.

Example::

    python -m bench.ab --b PYTHONPATH=bench/toggles --b MODELPORT_BENCH_TOGGLES=no-gc-freeze
"""

from __future__ import annotations

import os

_ON = {t.strip() for t in os.environ.get("MODELPORT_BENCH_TOGGLES", "").split(",") if t.strip()}


def _apply() -> None:
    if "no-gc-freeze" in _ON:
        import gc

        gc.freeze = lambda: None
    if "no-fast-path" in _ON:
        import server.rest.app as app

        app.RestApp._fast_allowed = lambda self: False  # type: ignore[method-assign]
    if "no-small-decode" in _ON:
        import server.decode as decode

        decode._SMALL = -1
    if "fast-access-log" in _ON:
        import logging
        import sys

        import server.cli as cli
        import server.logging as setup

        configure = setup.configure_logging

        def configure_logging(fmt="auto", level="INFO"):  # type: ignore[no-untyped-def]
            configure(fmt, level)
            from server.accesslog import JsonLinesHandler

            access = logging.getLogger("modelport.access")
            access.addHandler(JsonLinesHandler(sys.stderr))
            access.propagate = False

        cli.configure_logging = configure_logging
    if "single-write" in _ON:
        import uvicorn

        from server.rest.protocol import SingleWriteProtocol

        original = uvicorn.Config.__init__

        def init(self, app, *args, **kwargs):  # type: ignore[no-untyped-def]
            kwargs.setdefault("http", SingleWriteProtocol)
            original(self, app, *args, **kwargs)

        uvicorn.Config.__init__ = init  # type: ignore[method-assign]
    if "no-spin" in _ON:
        import onnxruntime as ort

        session_init = ort.InferenceSession.__init__

        def no_spin(self, path, sess_options=None, *args, **kwargs):  # type: ignore[no-untyped-def]
            if sess_options is not None:
                sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session_init(self, path, sess_options, *args, **kwargs)

        ort.InferenceSession.__init__ = no_spin  # type: ignore[method-assign]
    if "spin" in _ON:
        import server.runtime.session as session

        init = session.OnnxSession.__init__

        def spinning(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            init(self, *args, **{**kwargs, "allow_spinning": True})

        session.OnnxSession.__init__ = spinning  # type: ignore[method-assign]
    if "no-inline" in _ON:
        import server.runtime.batcher as batcher

        batcher_init = batcher.Batcher.__init__

        def thread_only(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            batcher_init(self, *args, **kwargs)
            self._inline_s = 0.0

        batcher.Batcher.__init__ = thread_only  # type: ignore[method-assign]


if _ON:
    _apply()
