"""Serving options of the onnxruntime session: idle intra-op threads do not spin unless asked to."""

from __future__ import annotations

import numpy as np
import pytest

from server.runtime.session import OnnxSession
from tests.server.runtime.fakes import add_model


@pytest.mark.parametrize(("allow", "entry"), [(False, "0"), (True, "1")])
def test_spinning_is_off_by_default(allow: bool, entry: str) -> None:
    kwargs = {} if not allow else {"allow_spinning": True}
    session = OnnxSession(add_model(3), providers="cpu", intra_op_threads=2, **kwargs)
    options = session._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    out = session.run({"x": np.ones((2, 3), np.float32)})
    assert out["y"].tolist() == [[2.0, 3.0, 4.0]] * 2
