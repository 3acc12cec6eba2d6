"""``braggscope reduce sxdm <run id | file.h5> --out maps.h5 [--figures DIR]``.

The source is an ID01 BLISS HDF5 file, an XSOCS master file, or a run of the
catalog (scan id or uid, opened with the configuration of ``braggscope
--config``).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from braggscope.analysis.readers import CheckedStack, open_catalog_checked, read_catalog_run, read_stack
from braggscope.analysis.sxdm.figures import save_figures
from braggscope.analysis.sxdm.files import save_maps
from braggscope.analysis.sxdm.grid import grid_pixel_peak
from braggscope.analysis.sxdm.stack import reduce_map, register_map_drift, stack_monitor
from braggscope.core.atomic import atomic_path, staged_directory
from braggscope.core.config import load_config
from braggscope.core.errors import ArgumentError, DataWarning, SourceMissingError
from braggscope.core.stacks import MapStack


def add_parser(subparsers) -> None:
    """Add ``sxdm`` to ``braggscope reduce``."""
    p = subparsers.add_parser("sxdm", help="strain and tilt maps of an SXDM rocking-angle stack")
    p.add_argument("source", help="BLISS or XSOCS HDF5 file, or a catalog run (scan id or uid)")
    p.add_argument("--out", required=True, help="output maps file (NeXus-style HDF5)")
    p.add_argument("--figures", default=None, metavar="DIR", help="write PNG figures into DIR")
    p.add_argument("--format", default="auto", choices=("auto", "bliss", "xsocs"), help="file layout")
    p.add_argument("--threshold", type=float, default=0.2, help="intensity mask fraction (default 0.2)")
    p.add_argument("--background", default="constant",
                   help="constant | snip | none | a number of counts (default constant)")
    p.add_argument("--median", type=int, default=2, help="true median filter size (default 2; 1 = off)")
    p.add_argument("--fit", default="com", choices=("com", "gaussian"), help="peak centre estimate")
    p.add_argument("--drift", default="none", choices=("none", "register"),
                   help="register: measure the drift between angles and undo it (on a fluorescence counter "
                        "when the source records one, else on the Bragg intensity)")
    p.add_argument("--drift-signal", default="auto", metavar="auto|bragg|COUNTER",
                   help="what --drift register correlates (default auto: the fluorescence counter, e.g. ct_fluo, "
                        "else the Bragg intensity)")
    p.add_argument("--upsample", type=int, default=10, help="registration upsampling (default 10)")
    monitor = p.add_mutually_exclusive_group()
    monitor.add_argument("--monitor", default="auto", metavar="COUNTER",
                         help="normalise by this counter (default: the run's monitor; in a BLISS file mon1 "
                              "when recorded); points where it reads 0 (no beam) are left out")
    monitor.add_argument("--no-monitor", dest="monitor", action="store_const", const=None,
                         help="no monitor normalisation")
    p.add_argument("--roi", default=None, metavar="QX0:QX1,QY0:QY1,QZ0:QZ1",
                   help="reciprocal-space box (1/A); an empty part leaves that axis open")
    p.add_argument("--detector-roi", default=None, metavar="R0,R1,C0,C1", help="detector pixels to read")
    p.add_argument("--tilt-cap", type=float, default=None, help="fixed saturation cap of the mosaicity map (deg)")
    p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask distributed scheduler, e.g. tcp://host:8786 (default: [analysis] dask_scheduler; "
                        "empty: threads here)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _parse_background(text):
    if text in ("constant", "snip", "none"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--background must be constant, snip, none or a number, got {text!r}") from None


def _parse_roi(text):
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"--roi needs three comma-separated ranges lo:hi, got {text!r}")
    roi = []
    for part in parts:
        if not part.strip():
            roi.append(None)
            continue
        try:
            lo, hi = (float(v) for v in part.split(":"))
        except ValueError:
            raise ValueError(f"--roi range {part!r} is not lo:hi") from None
        roi.append((lo, hi))
    return tuple(roi)


def _parse_detector_roi(text):
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--detector-roi must be four integers r0,r1,c0,c1, got {text!r}") from None
    if len(vals) != 4:
        raise ValueError(f"--detector-roi must be four integers r0,r1,c0,c1, got {text!r}")
    return vals


def load_source(source, fmt="auto", config=None) -> MapStack:
    """The :class:`~braggscope.core.stacks.MapStack` of a BLISS/XSOCS file, or of a catalog run
    (scan id or uid).

    Both go through :mod:`braggscope.analysis.readers`, which checks every file
    read (sources and links included) and names what is missing or damaged.
    """
    path = Path(source)
    if path.exists() or path.suffix.lower() in (".h5", ".hdf5", ".nxs"):
        if not path.exists():
            raise SourceMissingError(f"{path}: no such file")
        return read_stack(path, format=fmt)
    return read_catalog_run(open_catalog_checked(load_config(config)), source, kind="sxdm")


def _check_args(args):
    """Parsed options, or an ArgumentError naming the option; nothing is read or written."""
    try:
        opts = dict(background=_parse_background(args.background), roi=_parse_roi(args.roi),
                    detector_roi=_parse_detector_roi(args.detector_roi))
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if not 0 <= args.threshold < 1:
        raise ArgumentError(f"--threshold must be in [0, 1), got {args.threshold}")
    if args.median < 1:
        raise ArgumentError(f"--median must be >= 1, got {args.median}")
    if args.upsample < 1:
        raise ArgumentError(f"--upsample must be >= 1, got {args.upsample}")
    if args.workers is not None and args.workers < 1:
        raise ArgumentError(f"--workers must be >= 1, got {args.workers}")
    if Path(args.out).is_dir():
        raise ArgumentError(f"--out {args.out} is a directory; give a file name such as maps.h5")
    if args.figures and Path(args.figures).exists() and not Path(args.figures).is_dir():
        raise ArgumentError(f"--figures {args.figures} exists and is not a directory")
    return opts


def _scheduler(args) -> str:
    """Where the reduction computes: ``--scheduler``, else ``[analysis] dask_scheduler``, else threads here."""
    address = args.scheduler if args.scheduler is not None else \
        load_config(getattr(args, "config", None)).get("analysis.dask_scheduler", "")
    if not address:
        return "threads"
    if "://" not in address:
        raise ArgumentError(f"dask scheduler must be an address such as tcp://host:8786, got {address!r} "
                            "(--scheduler or [analysis] dask_scheduler)")
    return address


def run(args) -> int:
    """Run the reduction; returns the process exit status.

    Order: options checked, input read and checked, the monitor chosen, the
    drift registered (with a report of its signal and confidence), maps reduced
    (frames checked as read), figures drawn; only then are ``--out`` and
    ``--figures`` written, atomically: a failure at any step leaves no output behind.
    Expected errors are :class:`~braggscope.core.errors.UserError` (the
    ``braggscope`` entry point prints them on one line and exits 2).
    """
    opts = _check_args(args)
    scheduler = _scheduler(args)
    stack = load_source(args.source, args.format, getattr(args, "config", None))
    # one check of every block read, for the drift registration, the reduction and the figures
    stack = replace(stack, frames=CheckedStack(stack.frames, stack.source or args.source,
                                               pixel_mask=stack.require_setup().pixel_mask))
    progress = not args.quiet
    monitor, name = stack_monitor(stack, args.monitor)
    print(_normalisation_line(stack, monitor, name, args.monitor))
    registration = None
    if args.drift == "register":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # the report below says it
            registration = register_map_drift(stack, signal=args.drift_signal, monitor=args.monitor,
                                              upsample=args.upsample, progress=progress)
        for line in registration.report(stack.eta):
            print(line)
    maps = reduce_map(stack, threshold=args.threshold, median=args.median, fit=args.fit, monitor=args.monitor,
                      num_workers=args.workers, progress=progress, scheduler=scheduler,
                      shifts=None if registration is None else registration.shifts, **opts)
    if registration is not None:
        maps["drift_confidence"] = ("eta", registration.confidence,
                                    {"long_name": "registration confidence (noise-corrected correlation)"})
        maps.attrs.update(drift_signal=registration.signal, drift_min_confidence=registration.min_confidence)
    _write(args, maps, stack)
    return 0


def _normalisation_line(stack, monitor, name, wanted) -> str:
    """One line saying how the frames are normalised, and why."""
    if monitor is None:
        if wanted is None:
            return "monitor: none (--no-monitor)"
        counters = ", ".join(sorted(stack.counters)) or "none"
        return f"monitor: none recorded (counters: {counters}; --monitor COUNTER names one)"
    no_beam = int(np.sum(monitor == 0))
    beam = f", {no_beam} points without beam left out" if no_beam else ""
    return f"monitor: frames normalised by {name} (reference {np.median(monitor[monitor > 0]):.6g}{beam})"


def _write(args, maps, stack):
    """Write the maps file and the figures, all or nothing."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as outputs:
        tmp = outputs.enter_context(atomic_path(out))
        save_maps(maps, tmp)
        n_figures = 0
        if args.figures:
            stage = outputs.enter_context(staged_directory(args.figures))
            n_figures = len(_figures(args, maps, stack, stage))
    n = int(maps.mask.sum())
    print(f"wrote {out}: {maps.sizes['y']} x {maps.sizes['x']} map, {n} pixels in the mask, "
          f"d_mean = {maps.attrs['d_mean']:.5f} A, strain rms = {float(maps.strain.std()):.1f} microstrain")
    if args.figures:
        print(f"wrote {n_figures} figures to {args.figures}")


def _figures(args, maps, stack, outdir):
    # one pixel's Bragg peak in Q (Figure 3B): the brightest map pixel
    iy, ix = np.unravel_index(int(np.nanargmax(maps.intensity.values)), maps.intensity.shape)
    grid = grid_pixel_peak(stack.frames, stack.eta, stack.require_setup().geometry(), *stack.angles(),
                           pixel=(iy, ix), median=args.median)
    return save_figures(maps, outdir, tilt_cap=args.tilt_cap, peak_grid=grid)
