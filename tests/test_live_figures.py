"""Live figures as files refreshed in place (headless): the SXDM maps while a map fills, 1D scans with peak stats.

The map figure uses the offline figures' colour maps, colour scales and units
(``analysis.sxdm.figures``); the files are written during the map, not only at
its end; the scan figure marks bluesky's peak statistics.
"""

import numpy as np
import pytest
from bluesky import RunEngine
from matplotlib import image as mpimg

from braggscope.analysis.live.plot import LiveMapPlot
from braggscope.analysis.sxdm.figures import MAP_STYLES, colour_limits, figure_maps
from braggscope.app.beamline.runengine import install_baseline, subscribe_live_maps
from braggscope.app.commands import make_commands
from braggscope.app.session.live_figures import LIVE_MAP_PANELS, LiveMapFiles, LiveScanFile, show_live_maps
from braggscope.core.config import load_config
from braggscope.plans import sxdm_map
from braggscope.simulators.beamline import SimulatedBeamline
from braggscope.simulators.inprocess import make_inprocess_devices

SHAPE = (64, 64)


@pytest.fixture(scope="module")
def beamline(tmp_path_factory):
    cfg = load_config()
    sim = SimulatedBeamline("nmc622", shape=SHAPE, cch=(32.0, 32.0), distance_m=cfg["detector.distance_m"],
                            energy_kev=cfg["energy.energy_kev"], seed=5)
    devices = make_inprocess_devices(sim, tmp_path_factory.mktemp("frames"), limits=cfg["limits"])
    devices["detector"] = devices["mpx1x4"]
    RE = RunEngine(call_returns_result=True)
    install_baseline(RE, devices)
    commands = make_commands(RE, devices, out=lambda line: None)
    bragg = sim.bragg_setup()
    commands.mv("delta", bragg["delta"], "eta", bragg["eta"])
    return RE, devices, commands, bragg


def test_live_map_file_is_written_while_the_map_fills(beamline, tmp_path):
    RE, d, _, bragg = beamline
    live, dispatcher, token = subscribe_live_maps(RE)
    printed = []
    files = LiveMapFiles(live, tmp_path, min_interval_s=0.5, out=printed.append)
    dispatcher.on_update.append(files)
    during = []

    def watch(name, doc):  # in the RunEngine thread, mid-map: the worker has drawn the partial map
        if name == "event" and doc["seq_num"] == 30:
            dispatcher.wait(30)
            during.append((files.path.exists(), live.finished, files.n_saved))

    watch_token = RE.subscribe(watch)
    try:
        cx, cy = bragg["center_um"]
        etas = list(np.linspace(bragg["eta"] - 0.15, bragg["eta"] + 0.15, 3))
        RE(sxdm_map([d["mpx1x4"]], d["pix"], (cx - 0.5, cx + 0.5, 5), d["piy"], (cy - 0.4, cy + 0.4, 3),
                    d["eta"], etas))
        dispatcher.wait(60)
    finally:
        RE.unsubscribe(watch_token)
        RE.unsubscribe(token)
        dispatcher.close()
    assert during and during[0][0] and not during[0][1] and during[0][2] >= 1  # a figure before the map ended
    assert live.finished and files.n_saved > during[0][2]  # and the finished map drawn again
    assert printed == [f"live maps: {files.path}"]
    image = mpimg.imread(files.path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # a readable PNG, panels side by side
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind

    # the same colour maps, labels, colour scales and units as the offline figures
    maps = live.maps()
    plot = files._plot
    offline = {ax.get_title(): ax for ax in figure_maps(maps).axes if ax.get_title()}
    for name, cmap, title in LIVE_MAP_PANELS:
        ax = plot._axes[name]
        image = plot._images[name]
        assert ax.get_xlabel() == "x (µm)" and ax.get_ylabel() == "y (µm)"
        if name in MAP_STYLES:
            label, offline_cmap = MAP_STYLES[name]
            assert (title, cmap, image.get_cmap().name) == (label, offline_cmap, offline_cmap)
            off_image = offline[label].images[0]
            assert off_image.get_cmap().name == image.get_cmap().name
            lo, hi = colour_limits(name, maps[name].values)
            if lo is not None:
                assert image.get_clim() == pytest.approx((lo, hi))
                assert off_image.get_clim() == pytest.approx((lo, hi))
            else:
                finite = maps[name].values[np.isfinite(maps[name].values)]
                assert image.get_clim() == pytest.approx((finite.min(), finite.max()))
                assert off_image.get_clim() == pytest.approx((finite.min(), finite.max()))
    assert plot._images["tilt_azimuth"].get_clim() == (-180, 180)

    # with a display the same panels go to a pyplot window redrawn by a GUI timer (Agg here)
    import matplotlib.pyplot as plt

    window = show_live_maps(live, min_interval_s=0.0)
    try:
        assert window.update(force=True) and [p[0] for p in window.panels] == [p[0] for p in LIVE_MAP_PANELS]
    finally:
        plt.close(window.figure)


def test_default_live_panels_follow_the_offline_styles():
    plot = LiveMapPlot(type("Source", (), {"maps": lambda self: None})())
    for name, cmap, title in plot.panels:
        assert (title, cmap) == MAP_STYLES[name]


def test_live_scan_file_marks_the_peak_statistics(beamline, tmp_path):
    RE, d, commands, bragg = beamline
    printed = []
    scan = LiveScanFile(tmp_path, every_n=5, every_s=60.0, out=printed.append)
    token = RE.subscribe(scan)
    try:
        commands.roi(d["mpx1x4"], 16, 48, 16, 48)
        commands.ascan(d["eta"], bragg["eta_start"], bragg["eta_stop"], 20, 0.001)
    finally:
        RE.unsubscribe(token)
    assert printed == [f"live plot: {scan.path}"]
    assert scan.n_draws >= 2  # while the scan ran (every 5 points) and at its end
    assert mpimg.imread(scan.path).ndim == 3
    last = scan.peaks.last
    stats = last.stats["mpx1x4_roistat1_total"]
    assert stats.cen == pytest.approx(commands.peak_tracker.last.stats["mpx1x4_roistat1_total"].cen)
    assert bragg["eta_start"] < stats.cen < bragg["eta_stop"]


def test_the_session_lets_live_drawings_finish_before_it_exits(tmp_path):
    """A daemon thread still drawing when the interpreter exits aborts the process (matplotlib's C++ font
    code): the session's cleanup waits for the live maps' worker and the scan figure first."""
    import time

    from braggscope.analysis.live.dispatch import LiveMapDispatcher
    from braggscope.app.session.namespace import settle_live

    done = []

    def slow_drawing(tag):
        time.sleep(0.3)
        done.append(tag)

    dispatcher = LiveMapDispatcher(lambda name, doc: None, on_update=lambda: slow_drawing("maps"))
    scan = LiveScanFile(tmp_path, out=lambda *a: None)
    dispatcher("start", {})
    scan._worker.submit(lambda: slow_drawing("scan"))
    settle_live(dispatcher, {"scan": scan, "maps": None})
    assert sorted(done) == ["maps", "scan"]
    assert not dispatcher._thread.is_alive()
