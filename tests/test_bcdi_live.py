"""The live view of a phase retrieval: error curves and central slices, a PNG refreshed in place."""

from __future__ import annotations

import numpy as np
import pytest

from braggscope.analysis.bcdi import phase_retrieval
from braggscope.analysis.bcdi.live import LiveView, central_planes, decode_slices, encode_slices
from tests.test_bcdi_helpers import far_field, synthetic_crystal


@pytest.fixture(scope="module")
def intensity():
    rho, _, _ = synthetic_crystal(n=32, radius=5)
    return far_field(rho, seed=1)


def test_live_png_while_phasing_and_history_in_the_result(intensity, tmp_path):
    path = tmp_path / "live.png"
    seen = []

    class Watched(LiveView):
        def draw(self, force=False):
            before = self.drawings
            super().draw(force)
            if self.drawings > before:  # a complete PNG each time, never a partial one
                data = path.read_bytes()
                seen.append((data[:8], data[-8:], len(self.history)))

    live = Watched(path, min_interval_s=0.0, slices_every=20)
    r = phase_retrieval(intensity, n_runs=2, seed=0, recipe="HIO:40,ER:40", progress=False, live=live)
    assert len(seen) >= 2  # throttled: at most about 5 % of the time drawing
    assert all(head == b"\x89PNG\r\n\x1a\n" and tail[-4:] == b"\xaeB`\x82" for head, tail, _ in seen)
    assert not list(tmp_path.glob("*.tmp*")) and path.stat().st_size > 1000
    assert set(live.history) >= {0, 1}
    # the history kept in the result is the one drawn
    for k, hist in zip(r.kept, r.history):
        its, errs = hist
        assert list(live.history[k][0]) == list(its) and np.allclose(live.history[k][1], errs)
        assert its == tuple(range(0, 80, 10)) and errs[-1] < errs[0]
    assert r.metrics[r.kept[0]]["error"] == r.history[0][1][-1]


def test_slices_survive_their_encoding():
    class State:  # what a worker's monitor reads of a start
        class be:
            asnumpy = staticmethod(np.asarray)

    rng = np.random.default_rng(0)
    State.psi = (rng.normal(size=(20, 24, 200)) + 1j * rng.normal(size=(20, 24, 200))).astype(np.complex64)
    State.sup = rng.random((20, 24, 200)) > 0.5
    got = decode_slices(encode_slices(State))
    planes = central_planes(State.psi)
    top = max(np.abs(p).max() for p in planes)
    # 200 columns strided by 3 (at most 96 a side)
    np.testing.assert_allclose(got["amplitude"][0], np.abs(planes[0][:, ::3]) / top, atol=0.5 / 254 + 1e-6)
    assert got["amplitude"][1].shape == (20, 67) and got["amplitude"][2].shape == (20, 24)
    sup0 = central_planes(State.sup)[0][:, ::3]
    assert np.array_equal(got["support"][0] > 0.5, sup0)
    ph = got["phase"][0]
    assert np.all(np.isnan(ph) == ~sup0)
    want = np.angle(np.conj(planes[0][:, ::3]))[sup0]
    assert np.max(np.abs(np.angle(np.exp(1j * (ph[sup0] - want))))) <= 2 * np.pi / 254


def test_notebook_figure_is_updated_in_place(monkeypatch, tmp_path):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(obj, display_id=False):
        shown.append(("display", obj))
        return Handle()

    import IPython.display

    monkeypatch.setattr(IPython.display, "display", display)
    live = LiveView(notebook=True, min_interval_s=0.0)
    live.receive({"run": 0, "it": 10, "iterations": [0, 10], "errors": [1.0, 0.5]})
    live.draw()
    live.receive({"run": 0, "it": 20, "iterations": [20], "errors": [0.25]})
    live.draw()  # too soon after the first: throttled
    live.close()  # the final drawing is never throttled
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert shown[0][1].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_live_arguments():
    with pytest.raises(ValueError, match="slices_every"):
        LiveView(slices_every=0)
