"""Live view of a phase retrieval: error curves and central slices while it runs.

:class:`LiveView` receives each start's Fourier error every 10 iterations
(:data:`.iterations.ERROR_EVERY`) and, every ``slices_every`` iterations,
the three central planes of the current iterate's amplitude, phase
(physical sign, inside the support) and support, from this process or from
cluster workers (:mod:`.distributed`). It draws one figure: the error
curves of all starts on top, the latest start's planes below. The figure
is written as a PNG that is replaced atomically (a viewer reloading the file
never sees half of one) and, in a Jupyter notebook, shown as one image
updated in place. Drawing is throttled so that it takes at most about 5 % of
the wall time.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from braggscope.core.atomic import atomic_path

__all__ = ["LiveView", "central_planes", "encode_slices", "decode_slices"]

#: Largest side of a plane sent from a worker (voxels; larger planes are strided).
MAX_PLANE = 96
_FIELDS = (("amplitude", "amplitude", "viridis", (0.0, 1.0)), ("phase", "phase (rad)", "twilight", (-np.pi, np.pi)),
           ("support", "support", "gray", (0.0, 1.0)))


def central_planes(a) -> list:
    """The planes through the array centre normal to each axis (3-D), or the array itself (2-D)."""
    if a.ndim == 2:
        return [a]
    c = [n // 2 for n in a.shape]
    return [a[c[0]], a[:, c[1]], a[:, :, c[2]]]


def _planes_of(state) -> dict:
    """Host planes of a :class:`.iterations.Start`'s iterate: amplitude / max, phase (physical sign), support."""
    be = state.be
    psi = [be.asnumpy(p) for p in central_planes(state.psi)]
    sup = [be.asnumpy(p).astype(bool) for p in central_planes(state.sup)]
    top = max(float(np.abs(p).max()) for p in psi) or 1.0
    return {"amplitude": [np.abs(p) / top for p in psi],
            "phase": [np.where(s, np.angle(np.conj(p)), np.nan) for p, s in zip(psi, sup)],  # conj: physical sign
            "support": [s.astype(np.float32) for s in sup]}


def encode_slices(state) -> dict:
    """A worker's planes as compact bytes (uint8, strided to at most :data:`MAX_PLANE` voxels a side)."""
    out = {}
    for name, _, _, (lo, hi) in _FIELDS:
        planes = []
        for p in _planes_of(state)[name]:
            step = tuple(max(1, -(-n // MAX_PLANE)) for n in p.shape)
            p = p[::step[0], ::step[1]]
            q = np.where(np.isfinite(p), np.rint(np.clip((p - lo) / (hi - lo), 0, 1) * 254), 255).astype(np.uint8)
            planes.append((list(q.shape), q.tobytes()))
        out[name] = planes
    return out


def decode_slices(encoded: dict) -> dict:
    """Inverse of :func:`encode_slices` (255 -> NaN)."""
    out = {}
    for name, _, _, (lo, hi) in _FIELDS:
        planes = []
        for shape, raw in encoded[name]:
            q = np.frombuffer(raw, np.uint8).reshape(shape)
            planes.append(np.where(q == 255, np.nan, lo + q / 254 * (hi - lo)))
        out[name] = planes
    return out


class LiveView:
    """Error curves and central slices of a running phase retrieval.

    Parameters
    ----------
    path : path-like, optional
        PNG replaced atomically at each drawing.
    notebook : bool, optional
        Show (and update in place) the figure in a Jupyter notebook; default:
        when running in one.
    slices_every : int
        Iterations between two views of the iterate.
    min_interval_s : float
        Shortest time between two drawings (longer when drawing is slow).

    Attributes
    ----------
    history : dict
        Start index (``"<k> tight"`` for a start's tight-schedule run, :mod:`.schedule`) ->
        ``(iterations, errors)`` received so far; a finished start's entry is the run it kept.
    """

    wants_slices = True

    def __init__(self, path=None, *, notebook: bool | None = None, slices_every: int = 50,
                 min_interval_s: float = 2.0):
        if slices_every < 1:
            raise ValueError(f"slices_every must be >= 1 iteration, got {slices_every!r}")
        self.path = None if path is None else Path(path)
        self.notebook = _in_notebook() if notebook is None else bool(notebook)
        self.slices_every, self.min_interval_s = int(slices_every), float(min_interval_s)
        self.history, self.final = {}, {}
        self.planes, self.planes_of = None, None
        self._handle, self._last, self._cost, self._dirty = None, 0.0, 0.0, False
        self.drawings = 0

    # -- input -------------------------------------------------------------------
    def monitor(self, k: int):
        """A monitor for start ``k`` running in this process (:meth:`.iterations.Start.run`)."""

        last = [-self.slices_every]

        def watch(state, it):
            self._errors(_key(k, state.label), state.iterations[-1:], state.errors[-1:])
            if it - last[0] >= self.slices_every:
                self.planes, self.planes_of, last[0] = _planes_of(state), (k, it), it
            self.draw()

        return watch

    def receive(self, msg: dict) -> None:
        """An event of a worker (:mod:`.distributed`): new errors, maybe slices (drawn at the next :meth:`draw`)."""
        self._errors(_key(msg["run"], msg.get("label", "")), msg["iterations"], msg["errors"])
        if msg.get("slices"):
            self.planes, self.planes_of = decode_slices(msg["slices"]), (msg["run"], msg["it"])

    def finished(self, k: int, result) -> None:
        """Start ``k`` ended in this process (its :class:`.iterations.StartResult`)."""
        its, errs = result.history
        self.history[k] = (list(its), list(errs))
        self.finished_metrics(k, result.metrics)

    def finished_metrics(self, k: int, metrics: dict) -> None:
        """Start ``k`` ended (its metrics: the final error is marked on its curve)."""
        self.final[k] = metrics.get("error")
        self._dirty = True
        self.draw()

    def _errors(self, k, its, errs):
        h = self.history.setdefault(k, ([], []))
        h[0].extend(int(i) for i in its)
        h[1].extend(float(e) for e in errs)
        self._dirty = True

    # -- output ------------------------------------------------------------------
    def draw(self, force: bool = False) -> None:
        """Redraw when something changed and the throttle allows (always with ``force``)."""
        if not (self._dirty or force) or (self.path is None and not self.notebook):
            return
        now = time.perf_counter()
        if not force and now - self._last < max(self.min_interval_s, 20 * self._cost):
            return
        fig = self.figure()
        if self.path is not None:
            with atomic_path(self.path) as tmp:
                fig.savefig(tmp, format="png", dpi=80)
        if self.notebook:
            self._show(fig)
        self._last, self._dirty = time.perf_counter(), False
        self._cost = self._last - now
        self.drawings += 1

    def close(self) -> None:
        """Final drawing."""
        self.draw(force=True)

    def figure(self):
        """The current figure (``matplotlib.figure.Figure``): error curves, then the latest start's central planes."""
        from matplotlib.figure import Figure  # slow to import: only when a view is drawn

        fig = Figure(figsize=(9.0, 9.5), layout="constrained")
        grid = fig.add_gridspec(4, 3, height_ratios=(1.3, 1, 1, 1))
        ax = fig.add_subplot(grid[0, :])
        for k in sorted(self.history, key=str):
            its, errs = self.history[k]
            if errs:
                ax.semilogy(its, np.maximum(errs, 1e-12), lw=1, label=f"start {k}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("Fourier error")
        ax.set_title(f"{len({str(k).split()[0] for k in self.history})} starts, {len(self.final)} finished")
        if 0 < len(self.history) <= 10:
            ax.legend(fontsize=7, ncols=2)
        if self.planes is not None:
            k, it = self.planes_of
            for row, (name, label, cmap, lims) in enumerate(_FIELDS, start=1):
                for col, plane in enumerate(self.planes[name]):
                    a = fig.add_subplot(grid[row, col])
                    im = a.imshow(plane, cmap=cmap, vmin=lims[0], vmax=lims[1], origin="lower")
                    a.set_xticks([])
                    a.set_yticks([])
                    if col == 0:
                        a.set_ylabel(label)
                    if row == 1:
                        a.set_title(f"start {k}, iteration {it}: centre plane of axis {col}", fontsize=8)
                if name != "support":
                    fig.colorbar(im, ax=a, shrink=0.8)
        return fig

    def _show(self, fig):
        from IPython.display import Image, display  # only in a notebook

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        image = Image(data=buf.getvalue())
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def _key(k, label):
    return k if not label else f"{k} {label}"


def _in_notebook() -> bool:
    """True inside a Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
