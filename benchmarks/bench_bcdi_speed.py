"""BCDI phase-retrieval speed, quality and success rate, each beside a baseline measured in the same run.

1. Seconds per iteration of ER, HIO and RAAR at 128^3 (complex64, scipy.fft,
   all cores) beside the FFT-pair floor (fftn + ifftn, complex64,
   ``workers=-1``, ``overwrite_x=True``); goal <= 1.5x the floor. Iterations are
   timed as the difference of two run lengths, so set-up is excluded; each
   figure is the best of interleaved rounds, in wall-clock and in process CPU
   time (the machine is shared and noisy).
2. Success rate of the default recipe (its schedule chosen per data set,
   analysis/bcdi/schedule.py) over 10 random starts at 64^3 on the test
   suite's independent synthetic crystal: three coherent data sets from mild
   to hard and two partially coherent ones (the coherent intensity blurred by
   0.2/0.4/0.4 and 0.4/0.8/0.8 voxels before the counting); success: support
   IoU >= 0.8 and phase rms <= 0.3 rad after registration/twin handling; the
   phase rms is printed also after a sub-voxel registration, the translation
   the data cannot fix; with ``--references``, the plain shrink-wrap references
   on the same data and seeds (the tight schedule alone, and textbook HIO:520
   + ER:100 with it); and how well each run-selection metric (sharpness,
   mean_to_max, Poisson LLK, chi2) ranks the runs of one data set by their
   true phase error.

3. The cost of a refresh of the partial-coherence model's effective
   amplitudes (every ``Recipe.coherence_refresh`` iterations), and the whole
   default recipe per iteration (shrink-wrap, coherence fits and refreshes,
   masked projections; set-up excluded) on the realistic gapped data beside
   its own floor, with the refresh every 4 iterations (default) and every
   iteration; goal <= 1.5x. That floor is timed over as many FFT pairs as the
   recipe has iterations in each round, so both last about as long under the
   same load (the best 10-pair burst is printed beside it). Optionally, cohere-core's numpy back-end per
   iteration at the same size (when ``cohere_core`` imports, or from
   ``--cohere-path`` an unpacked wheel).
4. Reconstruction quality beside cohere-core, in the same run on the same data
   (printed first): a realistic simulated measurement
   (``tests/test_bcdi_quality.py: realistic_measurement``: braggscope's BCDI
   simulator, a strained faceted particle, partial coherence, Poisson counts
   of ``--photons`` at the peak) in two variants, "cube" (the whole array
   measured, no mask: both codes see identical data) and "gapped" (two
   detector gaps and a rocking range of 75 % of the array: braggscope leaves
   those voxels free, cohere-core gets zeros there, as a user without masks
   would give it). Both codes run two random starts at the same iteration
   budget (cohere-core's documented default sequence
   ``3*(20*ER+180*HIO)+20*ER`` with its default shrink-wrap, twin and support
   settings, against braggscope's default recipe; 620 iterations each).
   Reported: the Fourier-amplitude error ``sum(s A - sqrt(I))^2 / sum(I)``
   over the measured voxels (one function for both; ``A`` each code's model
   amplitude: ``|F|``, or ``sqrt(G * |F|^2)`` with braggscope's fitted
   partial-coherence blur; ``s`` the least-squares scale), each code's own
   reported error, the agreement between the two starts (``|<a, b>| / (|a|
   |b|)`` after registration and twin handling), the agreement of each start
   with the simulator's true object, and the milliseconds per iteration (the
   whole call over its iterations) over the FFT-pair floor measured just
   before (wall and process CPU); with
   the error of the true object (coherent model) and of the noise-free
   partially coherent intensity (the Poisson floor) as references.

Usage: ``python benchmarks/bench_bcdi_speed.py [--size 128] [--seeds 10] [--quick] [--photons 1e6]
[--quality-only] [--no-success] [--success-only] [--references] [--no-recipe] [--recipe-only] [--rounds 3]
[--variants cube,gapped|none] [--cohere-path DIR]``. ``--recipe-only`` times only the whole default recipe
beside its floor (section 3, about 5 minutes at 128^3 with 3 rounds). About 3 minutes
at 64^3 with ``--quick --quality-only`` on two quiet cores; at 128^3 most of the time goes to
cohere-core (about 0.5-1 s per iteration on two cores: 10-20 minutes per data set).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy.ndimage import fourier_shift
from skimage.registration import phase_cross_correlation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from braggscope.analysis.bcdi import coherence, projections  # noqa: E402
from braggscope.analysis.bcdi import phasing as bcdi  # noqa: E402
from braggscope.analysis.bcdi.backend import get_backend  # noqa: E402
from braggscope.analysis.bcdi.iterations import single_run  # noqa: E402
from tests.test_bcdi_helpers import far_field, iou, phase_rms, synthetic_crystal  # noqa: E402
from tests.test_bcdi_quality import realistic_measurement  # noqa: E402

COHERE_DEFAULT = {  # cohere-core's documented default reconstruction configuration (config_rec)
    "algorithm_sequence": "3*(20*ER+180*HIO)+20*ER", "hio_beta": 0.9, "twin_trigger": [2],
    "shrink_wrap_trigger": [10, 1], "shrink_wrap_type": "GAUSS", "shrink_wrap_threshold": 0.1,
    "shrink_wrap_gauss_sigma": 1.0, "initial_support_area": [0.5, 0.5, 0.5],
}


class _NoBar:
    def update(self, n):
        pass


def _clock():
    return time.perf_counter(), time.process_time()


def fft_pair_floor(a, repeats=10):
    """Wall and CPU seconds of one fftn + ifftn pair (complex64, all cores, overwrite_x)."""
    w0, c0 = _clock()
    for _ in range(repeats):
        a = sfft.fftn(a, workers=-1, overwrite_x=True)
        a = sfft.ifftn(a, workers=-1, overwrite_x=True)
    w1, c1 = _clock()
    return (w1 - w0) / repeats, (c1 - c0) / repeats, a


def iteration_times(intensity, support, algo, n_short=3, n_long=13):
    """Wall and CPU seconds of runs of ``n_short`` and ``n_long`` iterations (same start)."""
    be = get_backend("scipy")
    out = {}
    for n in (n_short, n_long):
        recipe = bcdi.Recipe(steps=((algo, n),), shrinkwrap_every=0, partial_coherence=False)
        w0, c0 = _clock()
        single_run(intensity, support, None, recipe, np.random.default_rng(0), be, _NoBar())
        w1, c1 = _clock()
        out[n] = np.array([w1 - w0, c1 - c0])
    return out


def coherence_step_times(n, rounds=5, sigma=(0.4, 0.8, 0.8)):
    """Wall and CPU seconds of a coherent modulus projection and of a refresh of the effective amplitudes.

    The refresh (``|psi|^2``, a Gaussian blur as an rfftn / irfftn pair, the
    ratio: :func:`coherence.effective_amplitude`) runs every
    ``Recipe.coherence_refresh`` iterations of the partial-coherence phase;
    between refreshes an iteration costs a coherent one. Best of rounds.
    """
    be = get_backend("scipy")
    rng = np.random.default_rng(0)
    psi = (rng.normal(size=(n, n, n)) + 1j * rng.normal(size=(n, n, n))).astype(np.complex64)
    amp = rng.random((n, n, n)).astype(np.float32)
    eps = np.float32(1e-6)
    best = {"coherent": np.array([np.inf, np.inf]), "refresh": np.array([np.inf, np.inf])}
    for _ in range(rounds):
        for key in best:
            w0, c0 = _clock()
            if key == "coherent":
                be.map_blocks(lambda p, a: projections.modulus(p, a, eps), psi, amp)
            else:
                coherence.effective_amplitude(psi, amp, sigma, eps, be)
            w1, c1 = _clock()
            best[key] = np.minimum(best[key], [w1 - w0, c1 - c0])
    return best


def recipe_times(n, rounds, refreshes=(None, 1)):
    """Wall and CPU seconds per iteration of the default recipe, set-up excluded, beside the floor.

    On the realistic measurement (partial coherence, gaps, cut rocking range:
    the masked modulus projection, shrink-wrap, coherence fits and
    refreshes all run). Per iteration: ``(t(recipe) - t(ER:0)) / iterations``
    with the same start. ``refreshes``: values of ``coherence_refresh``
    (None: the default).

    Each round times the floor over as many FFT pairs as the recipe has
    iterations, just before the recipes, so that floor and recipe last
    about as long and share the machine's load (a best-of short bursts of
    the floor would catch quiet moments a 40-s recipe run cannot); the
    best 10-pair burst of each round is kept as well. Returns, per key, the
    best over the rounds, and ``"ratios"``: per round, the recipe's (wall,
    cpu) time per iteration over that round's long floor.
    """
    m = realistic_measurement(n, peak_counts=1e6, seed=0)
    intensity, mask = m["intensity"].astype(np.float32), m["mask"]
    support = bcdi.autocorrelation_support(intensity, mask=mask)
    be = get_backend("scipy")
    recipes = {k: bcdi.Recipe() if k is None else bcdi.Recipe(coherence_refresh=k) for k in refreshes}
    recipes["set-up"] = bcdi.Recipe(steps=(("ER", 0),))
    n_iter = bcdi.Recipe().n_iterations
    a = np.random.default_rng(0).random((n, n, n)).astype(np.complex64)
    single_run(intensity, support, mask, bcdi.Recipe(steps=(("ER", 2),)), np.random.default_rng(0), be, _NoBar())
    best = {k: np.array([np.inf, np.inf]) for k in [*recipes, "floor", "burst"]}
    ratios = []
    for _ in range(rounds):
        w, c, a = fft_pair_floor(a, repeats=10)
        best["burst"] = np.minimum(best["burst"], [w, c])
        w, c, a = fft_pair_floor(a, repeats=n_iter)
        floor = np.array([w, c])
        best["floor"] = np.minimum(best["floor"], floor)
        t = {}
        for key, recipe in recipes.items():
            w0, c0 = _clock()
            single_run(intensity, support, mask, recipe, np.random.default_rng(0), be, _NoBar())
            w1, c1 = _clock()
            t[key] = np.array([w1 - w0, c1 - c0])
            best[key] = np.minimum(best[key], t[key])
        ratios.append(((t[None] - t["set-up"]) / n_iter) / floor if None in t else floor * np.nan)
    out = {"floor": best["floor"], "burst": best["burst"], "ratios": np.array(ratios)}
    for key in refreshes:
        out[key] = (best[key] - best["set-up"]) / n_iter
    return out


def print_recipe_times(n, rounds, refreshes=(None, 1)):
    """Print :func:`recipe_times` (the whole default recipe beside its floor)."""
    k = bcdi.Recipe().coherence_refresh
    rt = recipe_times(n, rounds, refreshes)
    rw, rc = rt["floor"]
    bw, bc = rt["burst"]
    n_iter = bcdi.Recipe().n_iterations
    print(f"-- whole default recipe ({n_iter} iterations) on the realistic gapped, partially coherent data at {n}^3; "
          f"set-up excluded; best of {rounds} rounds; floor = {n_iter} fftn + ifftn pairs (complex64, workers=-1) "
          f"timed in each round: best wall {rw * 1e3:.1f} ms, cpu {rc * 1e3:.1f} ms per pair "
          f"(best 10-pair burst: wall {bw * 1e3:.1f} ms, cpu {bc * 1e3:.1f} ms)")
    for key, label in ((None, f"default recipe (refresh every {k})"), (1, "refresh every iteration")):
        if key not in rt:
            continue
        w, c = rt[key]
        print(f"{label:31s} wall {w * 1e3:6.1f} ms  {w / rw:4.2f}x   cpu {c * 1e3:6.1f} ms  {c / rc:4.2f}x"
              f"   (over the burst: wall {w / bw:4.2f}x, cpu {c / bc:4.2f}x)   "
              f"{'(goal <= 1.50x)' if key is None else '(the coherence step every iteration)'}")
    r = rt["ratios"]
    if None in rt:
        print("default recipe over its own round's floor, per round: wall "
              + ", ".join(f"{x:.2f}x" for x in r[:, 0]) + "; cpu " + ", ".join(f"{x:.2f}x" for x in r[:, 1]))


def speed_table(n, rounds, n_short=3, n_long=13):
    """Floor and iterations measured in interleaved rounds.

    Each quantity keeps its best (least disturbed) wall and CPU time over the
    rounds; the time per iteration is ``(best t(n_long) - best t(n_short)) /
    (n_long - n_short)``, which removes the set-up cost.
    """
    rho, shape, _ = synthetic_crystal(n=n, radius=n / 6.4)
    intensity = far_field(rho).astype(np.float32)
    support = bcdi.autocorrelation_support(intensity)
    a = np.random.default_rng(0).random((n, n, n)).astype(np.complex64)
    floor = np.array([np.inf, np.inf])
    runs = {algo: {n_short: np.array([np.inf, np.inf]), n_long: np.array([np.inf, np.inf])}
            for algo in ("ER", "HIO", "RAAR")}
    for _ in range(rounds):
        w, c, a = fft_pair_floor(a)
        floor = np.minimum(floor, [w, c])
        for algo in runs:
            t = iteration_times(intensity, support, algo, n_short, n_long)
            for k in t:
                runs[algo][k] = np.minimum(runs[algo][k], t[k])
    best = {"floor": floor}
    for algo, t in runs.items():
        best[algo] = (t[n_long] - t[n_short]) / (n_long - n_short)
    return best


def cohere_times(n, path=None):
    """cohere-core (APS) numpy back-end ms/iteration for ER, HIO, RAAR at n^3, or None if not importable.

    cohere-core reads its data from an .npy amplitude file and iterates in
    complex128 on one thread; timed like ours (difference of 3 and 13 iterations).
    """
    import contextlib
    import io
    import tempfile

    if path:
        sys.path.insert(0, str(path))
    try:
        import cohere_core.controller.phasing as cph
    except Exception:  # not installed, or a missing optional dependency
        return None
    rho, _, _ = synthetic_crystal(n=n, radius=n / 6.4)
    amp = np.sqrt(far_field(rho))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        f = str(Path(tmp) / "data.npy")
        np.save(f, amp)
        for algo in ("ER", "HIO", "RAAR"):
            t = {}
            for k in (3, 13):
                rec = cph.Rec({"algorithm_sequence": f"{k}*{algo}"}, f, "np", debug=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    rec.init_dev(-1)
                    rec.init_iter_loop()
                    w0, c0 = _clock()
                    rec.iterate()
                    w1, c1 = _clock()
                t[k] = np.array([w1 - w0, c1 - c0])
            out[algo] = (t[13] - t[3]) / 10
    return out


def fourier_error(calc_amplitude, intensity, measured):
    """``sum(s|F| - sqrt(I))^2 / sum(I)`` over the measured voxels, ``s`` the least-squares scale.

    ``calc_amplitude`` and ``intensity`` on one grid (either both centred or
    both origin-centred). The same function scores both codes; the scale
    makes it blind to cohere-core's normalisation of its final image.
    """
    f = np.abs(calc_amplitude)[measured].astype(np.float64)
    a = np.sqrt(np.clip(intensity[measured], 0, None).astype(np.float64))
    scale = float(np.sum(f * a) / max(np.sum(f * f), 1e-30))
    return float(np.sum((scale * f - a) ** 2) / max(np.sum(a * a), 1e-30))


def agreement(a, b):
    """``|<a, b>| / (|a| |b|)`` after registering ``b`` (or its twin) to ``a``."""
    b = bcdi.align_to_reference(b, a)
    return float(abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def without_ramp(obj):
    """``obj`` with its linear phase ramp and mean phase removed (support: 0.3 of the maximum amplitude)."""
    amp = np.abs(obj)
    return bcdi.remove_phase_ramp(obj, amp >= 0.3 * amp.max())


def run_braggscope(intensity, mask, seed):
    """One random start of the default recipe -> (object, centred model amplitude, own error, (wall, cpu) s, widths).

    The model amplitude is ``|F|``, or ``sqrt(G_sigma * |F|^2)`` when the
    partial-coherence model was fitted (each code is scored on its model of the data).
    """
    w0, c0 = _clock()
    r = bcdi.phase_retrieval(intensity, mask=mask, seed=seed, n_runs=1, progress=False, backend="scipy")
    w1, c1 = _clock()
    dt = np.array([w1 - w0, c1 - c0])
    obj = r.runs[0]  # physical sign, centred (rolls and twin flips keep |F|)
    calc = np.abs(np.fft.fftshift(np.fft.fftn(np.conj(obj)))) ** 2  # back to the FFT sign of the data
    px = r.metrics[0]["coherence_px"]
    if px is not None:
        calc = coherence.blur(calc, px)
    return obj, np.sqrt(np.clip(calc, 0, None)), r.metrics[0]["chi2"], dt, px


def run_cohere(amplitude_file, params):
    """One cohere-core run (numpy back-end, CPU) -> (object, centred |F|, own last error, (wall, cpu) s, None)."""
    import contextlib
    import io

    import cohere_core.controller.phasing as cph

    w0, c0 = _clock()
    with contextlib.redirect_stdout(io.StringIO()):
        rec = cph.create_rec(dict(params), str(amplitude_file), "np", -1, debug=True)
        if rec is None or rec.iterate() < 0:
            raise RuntimeError("cohere-core reconstruction failed")
    w1, c1 = _clock()
    dt = np.array([w1 - w0, c1 - c0])
    img = np.asarray(rec.get_image())
    calc = np.fft.fftshift(np.fft.ifftn(img))  # cohere-core: reciprocal space = ifft of its image
    return img, calc, float(rec.errs[-1]), dt, None


def quality_table(n, photons, path=None, variants=("cube", "gapped")):
    """Side-by-side quality of braggscope and cohere-core on the realistic measurement (printed)."""
    import tempfile

    if path:
        sys.path.insert(0, str(path))
    try:
        import cohere_core.controller.phasing  # noqa: F401
        have_cohere = True
    except Exception:  # not installed, or a missing optional dependency
        have_cohere = False
    n_iter = bcdi.Recipe().n_iterations
    print(f"\n== reconstruction quality at {n}^3, {photons:.0e} photons at the peak, partial coherence, "
          f"same data, {n_iter} iterations each, 2 random starts ==")
    print("error = sum(s A - sqrt(I))^2 / sum(I) over the measured voxels, A = the code's model amplitude "
          "(one function for both codes); "
          "own = each code's reported error; agree = |<a,b>|/(|a||b|) of the two starts; "
          "truth = the same with the simulator's true object (coherence widths used: true 0.4, 0.8, 0.8 px); "
          "ms/iteration = the whole call (set-up and metrics included) / iterations, x floor = over the FFT-pair "
          "floor measured just before (wall; process CPU)")
    data_sets = {"cube": dict(rocking_fraction=1.0, gaps=False), "gapped": {}}
    for label in variants:
        kw = data_sets[label]
        m = realistic_measurement(n, peak_counts=photons, seed=0, **kw)
        intensity, mask = m["intensity"], m["mask"]
        measured = ~mask
        truth_amp = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(m["truth"])))
        floor = fourier_error(np.sqrt(m["expected"]), intensity, measured)
        coherent = fourier_error(truth_amp, intensity, measured)
        print(f"-- {label}: {100 * mask.mean():.0f} % of the voxels unmeasured; references: true object "
              f"(coherent model) {coherent:.4f}, noise-free partially coherent intensity (Poisson floor) {floor:.4f}")
        rows = []
        fl = _floor(n)
        objs = [run_braggscope(intensity, mask if mask.any() else None, seed) for seed in (0, 1)]
        rows.append(("braggscope (default recipe)", objs, fl))
        if have_cohere:
            fl = _floor(n)
            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "data.npy"
                np.save(f, np.sqrt(np.where(mask, 0.0, intensity)).astype(np.float64))
                objs = [run_cohere(f, COHERE_DEFAULT) for _ in range(2)]
            rows.append(("cohere-core (default sequence)", objs, fl))
        truth = bcdi.remove_phase_ramp(m["truth"], m["support"])
        for name, objs, fl in rows:
            errs = [fourier_error(c, intensity, measured) for _, c, *_ in objs]
            own = [o[2] for o in objs]
            per_it = np.mean([o[3] for o in objs], axis=0) / n_iter  # (wall, cpu) seconds
            fid = [agreement(truth, without_ramp(o[0])) for o in objs]
            px = "" if objs[0][4] is None else f"   coherence widths {objs[0][4]} px"
            print(f"{name:31s} error {errs[0]:.4f} / {errs[1]:.4f}   own {own[0]:.4f} / {own[1]:.4f}   "
                  f"agree {agreement(objs[0][0], objs[1][0]):.3f}   truth {fid[0]:.3f} / {fid[1]:.3f}   "
                  f"{1e3 * per_it[0]:6.1f} ms/iteration ({per_it[0] / fl[0]:.2f}x; cpu {per_it[1] / fl[1]:.2f}x)"
                  f"{px}")
        if not have_cohere:
            print("cohere-core: skipped (not importable; pip install cohere-core or --cohere-path DIR)")


def _floor(n, rounds=3):
    """Best (wall, cpu) seconds of the FFT-pair floor at n^3 over a few rounds."""
    a = np.random.default_rng(1).random((n, n, n)).astype(np.complex64)
    best = np.array([np.inf, np.inf])
    for _ in range(rounds):
        w, c, a = fft_pair_floor(a)
        best = np.minimum(best, [w, c])
    return best


def spearman(a, b):
    """Rank correlation of two sequences."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


CASES = (  # label, phase amplitude (rad), radius (voxels), peak photons, partial-coherence blur (voxels) or None
    ("mild strain 1.5 rad", 1.5, 10.0, 1e5, None),
    ("strong strain 6 rad", 6.0, 13.0, 1e5, None),
    ("hard: 10 rad, 1e4 ph", 10.0, 13.0, 1e4, None),
    ("partially coherent", 1.5, 10.0, 1e5, (0.2, 0.4, 0.4)),
    ("partially coh. strong", 1.5, 10.0, 1e5, (0.4, 0.8, 0.8)),
)
#: Plain shrink-wrap references (--references): the tight schedule alone, and textbook HIO + ER with it.
REFERENCES = {
    "tight shrink-wrap alone": bcdi.Recipe().tight(),
    "textbook HIO:520,ER:100": bcdi.Recipe(steps=(("HIO", 520), ("ER", 100))).tight(),
}


def subvoxel_aligned(obj, truth):
    """``obj`` (registered to ``truth`` to the voxel) shifted by the sub-voxel rest of the translation.

    The data fix the object only up to a translation, which need not be a
    whole number of voxels: a reconstruction off the truth by half a voxel
    differs from it at every surface voxel and, through the phase gradient,
    inside. The shift comes from the upsampled cross-correlation of the
    amplitudes (1/20 voxel), applied as a Fourier phase ramp; the global
    phase is then matched again.
    """
    shift = phase_cross_correlation(np.abs(truth), np.abs(obj), upsample_factor=20, normalization=None)[0]
    moved = np.fft.ifftn(fourier_shift(np.fft.fftn(obj), shift))
    return moved * np.exp(1j * np.angle(np.vdot(moved, truth)))


def run_case(n_seeds, phase_amplitude, radius, photons, blur=None, recipe=None):
    """One data set (fixed noise), ``n_seeds`` random starts of the default recipe (or ``recipe``).

    Per start: support IoU and phase rms after registration to the voxel
    (and twin handling), the success criterion; and the phase rms after a
    further sub-voxel registration (``rms_sub``), which separates a
    translation the data cannot fix from errors of the object itself.
    ``blur``: the partially coherent beam's widths (voxels), or None.
    """
    rho, shape, _ = synthetic_crystal(phase_amplitude=phase_amplitude, radius=radius)
    truth = bcdi.remove_phase_ramp(rho, shape)
    intensity = far_field(rho, peak_photons=photons, seed=100, coherence_px=blur)
    rows = []
    for seed in range(n_seeds):
        r = bcdi.phase_retrieval(intensity, seed=seed, n_runs=1, progress=False, recipe=recipe)
        aligned = bcdi.align_to_reference(r.obj, truth)
        sup = np.abs(aligned) >= 0.3 * np.abs(aligned).max()
        score_iou, rms = iou(sup, shape), phase_rms(aligned, truth, shape)
        rms_sub = phase_rms(subvoxel_aligned(aligned, truth), truth, shape)
        rows.append({"ok": score_iou >= 0.8 and rms <= 0.3, "iou": score_iou, "rms": rms, "rms_sub": rms_sub,
                     **r.metrics[0]})
    return rows


def _speed_section(n, args):
    """Time per iteration of each algorithm, the coherence refresh, the whole recipe and cohere-core."""
    print(f"\n== time per iteration at {n}^3, complex64, scipy.fft workers=-1 (shared, noisy machine) ==")
    print("best of interleaved rounds; wall clock and process CPU time (less sensitive to other users)")
    best = speed_table(n, 2 if args.quick else 4)
    fw, fc = best["floor"]
    print(f"{'FFT-pair floor (baseline)':31s} wall {fw * 1e3:6.1f} ms  1.00x   cpu {fc * 1e3:6.1f} ms  1.00x")
    for algo in ("ER", "HIO", "RAAR"):
        w, c = best[algo]
        print(f"{algo + ' iteration (braggscope)':31s} wall {w * 1e3:6.1f} ms  {w / fw:4.2f}x   "
              f"cpu {c * 1e3:6.1f} ms  {c / fc:4.2f}x   (goal <= 1.50x)")

    steps = coherence_step_times(n)
    extra = steps["refresh"]
    k = bcdi.Recipe().coherence_refresh
    print(f"{'+ coherence refresh':31s} wall {extra[0] * 1e3:6.1f} ms  {extra[0] / fw:4.2f}x   "
          f"cpu {extra[1] * 1e3:6.1f} ms  {extra[1] / fc:4.2f}x   (once every {k} iterations of the coherence phase)")

    if not args.no_recipe:
        print_recipe_times(n, args.rounds)

    cc = cohere_times(n, args.cohere_path)
    if cc is None:
        print("cohere-core side by side: skipped (not importable; pip install cohere-core or --cohere-path DIR)")
    else:
        for algo, (w, c) in cc.items():
            print(f"{algo + ' iteration (cohere-core np)':31s} wall {w * 1e3:6.1f} ms  {w / fw:4.2f}x   "
                  f"cpu {c * 1e3:6.1f} ms  {c / fc:4.2f}x   (complex128, one thread)")


def _print_case(label, rows, dt):
    ok = sum(r["ok"] for r in rows)
    rms = [r["rms"] for r in rows]
    sub = [r["rms_sub"] for r in rows]
    tight = sum(r.get("schedule") == "tight" for r in rows)
    print(f"{label:26s} success {ok:2d}/{len(rows)}   phase rms median {np.median(rms):.3f} "
          f"[{min(rms):.3f}-{max(rms):.3f}] rad   IoU median {np.median([r['iou'] for r in rows]):.3f}   "
          f"sub-voxel registered: rms median {np.median(sub):.3f} [{min(sub):.3f}-{max(sub):.3f}] rad   "
          f"tight {tight:2d}   {dt / len(rows):.1f} s/run")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="3 seeds, 64^3 timing")
    p.add_argument("--cohere-path", default=None, help="directory holding an unpacked cohere-core wheel (optional)")
    p.add_argument("--photons", type=float, default=1e6, help="photons at the Bragg peak of the quality data set")
    p.add_argument("--quality-only", action="store_true", help="only the side-by-side quality table")
    p.add_argument("--no-success", action="store_true", help="skip the success-rate section (64^3, slow)")
    p.add_argument("--success-only", action="store_true", help="only the success-rate section")
    p.add_argument("--cases", default="",
                   help="success section: only the data sets whose label holds one of these comma-separated words")
    p.add_argument("--references", action="store_true",
                   help="success section: also the plain shrink-wrap references on the same data and seeds")
    p.add_argument("--no-recipe", action="store_true", help="skip the whole-recipe timing")
    p.add_argument("--recipe-only", action="store_true",
                   help="only the whole default recipe beside its floor (timing only: no quality, success, "
                        "per-algorithm or cohere-core sections; about 1.5 minutes per round at 128^3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the whole-recipe timing (default 3)")
    p.add_argument("--variants", default="cube,gapped",
                   help="quality data sets: cube, gapped, both (default) or none")
    args = p.parse_args(argv)
    n = 64 if args.quick else args.size
    seeds = 3 if args.quick else args.seeds
    variants = [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "none"]
    if any(v not in ("cube", "gapped") for v in variants):
        p.error(f"--variants must list 'cube' and/or 'gapped' (or be 'none'), got {args.variants!r}")
    if args.success_only:
        variants, args.quality_only = [], False
    if args.recipe_only:
        print("== whole default recipe per iteration beside the FFT-pair floor (timing only) ==")
        print_recipe_times(n, args.rounds, refreshes=(None,))
        return
    if variants:
        quality_table(n, args.photons, args.cohere_path, variants)
    if args.quality_only:
        return

    if not args.success_only:
        _speed_section(n, args)
    if args.no_success:
        return
    print(f"\n== default recipe ({bcdi.Recipe()}, schedule chosen per data set), {seeds} random starts per "
          "data set at 64^3 ==")
    print("success: support IoU >= 0.8 and phase rms <= 0.3 rad (after registration to the voxel and twin "
          "handling); sub-voxel registered: the phase rms after the rest of the translation is removed too; "
          "tight: starts that kept the tight schedule"
          + ("; then the plain shrink-wrap references on the same data and seeds" if args.references else ""))
    keys = ("sharpness", "mean_to_max", "llk", "chi2")
    picks = {k: [] for k in keys}
    recipes = {"default": None, **(REFERENCES if args.references else {})}
    words = [w.strip() for w in args.cases.split(",") if w.strip()]
    cases = [c for c in CASES[: 2 if args.quick else len(CASES)] if not words or any(w in c[0] for w in words)]
    for label, amp, radius, photons, blur in cases:
        for name, recipe in recipes.items():
            t0 = time.perf_counter()
            rows = run_case(seeds, amp, radius, photons, blur, recipe)
            _print_case(label if recipe is None else f"  {name}", rows, time.perf_counter() - t0)
            if recipe is None:
                by_case = rows
        rows = by_case
        rms = [r["rms"] for r in rows]
        for k in keys:
            vals = [r[k] for r in rows]
            pick = rows[int(np.argmin(vals))]["rms"]
            picks[k].append((spearman(vals, rms), pick, min(rms), float(np.median(rms))))
    print("\n== run-selection metrics (lower = better), same data, different random starts ==")
    print("rank corr = Spearman(metric, phase rms error) (1 = perfect ordering); picked = phase rms of the run "
          "the metric selects, vs best / median of all runs, per data set")
    for k in keys:
        corr = ", ".join(f"{c:+.2f}" for c, *_ in picks[k])
        sel = ", ".join(f"{p:.3f} ({b:.3f}/{m:.3f})" for _, p, b, m in picks[k])
        print(f"{k:12s} rank corr [{corr}]   picked (best/median) [{sel}]")


if __name__ == "__main__":
    main()
