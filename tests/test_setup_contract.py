"""The scan setup contract: one ScanSetup from devices to analysis.

* An operator's map in ``braggscope shell`` (in-process devices): a plain
  ``sxdm_map`` with devices and ranges only, and a plain ``bp.grid_scan``,
  reduced with ``braggscope reduce sxdm <scan id>``, give the maps of the same
  frames reduced the demo's way (``reduce_stack`` with a Geometry built here
  from the configuration, independently of the setup machinery).
* Every run records the setup (detector configuration signals + baseline),
  bluesky's ``count`` included; runs recorded before (flat start-document
  keys) still load; precedence and errors of ``ScanSetup.from_start_doc``.
"""

import bluesky.plan_stubs as bps
import bluesky.plans as bp
import numpy as np
import pytest

from braggscope import storage
from braggscope.analysis.sxdm.files import load_maps
from braggscope.analysis.sxdm.reduce import reduce_stack
from braggscope.app.cli.main import main
from braggscope.app.session.namespace import make_session
from braggscope.core.config import load_config, save_config
from braggscope.core.geometry import Geometry
from braggscope.core.setup import REQUIRED_FIELDS, ScanSetup, SetupError
from braggscope.simulators.beamline import SimulatedBeamline

SHAPE = (64, 64)
CCH = (32.0, 32.0)
MAP_VARS = ("intensity", "mask", "qx", "qy", "qz", "d_spacing", "strain", "tilt_altitude", "tilt_azimuth")


@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    """A ``braggscope shell`` namespace on in-process devices, with its configuration file."""
    root = tmp_path_factory.mktemp("operator")
    cfg = load_config()
    for key, value in (("storage.data_dir", str(root / "data")), ("detector.read_path", str(root / "detector")),
                       ("detector.write_path", str(root / "detector")), ("detector.shape", list(SHAPE)),
                       ("detector.cch", list(CCH))):
        cfg.set(key, value)
    path = save_config(cfg, root / "beamline.toml")
    cfg = load_config(path)
    ns = make_session(cfg, inprocess=True, live=False, headless=True)
    # what the beamline scientist knows: the reflection's Bragg angles and where the crystal is
    bragg = SimulatedBeamline.from_config(cfg).bragg_setup()
    ns["RE"](bps.mv(ns["delta"], bragg["delta"], ns["eta"], bragg["eta"]))
    yield cfg, path, ns, bragg
    ns["__cleanup__"]()


def _demo_path_maps(cfg, stack, delta):
    """The demo's reduction: reduce_stack with an explicit Geometry (from the configuration) and the CLI's defaults."""
    geometry = Geometry(cfg["energy.energy_kev"], cfg["detector.distance_m"], cfg["detector.pixel_m"], CCH)
    return reduce_stack(stack.frames, stack.eta, geometry, delta, 0.0, 0.0, x=stack.x, y=stack.y, threshold=0.2,
                        background="constant", median=2, fit="com", progress=False)


def _reduce_with_cli(path, scan_id, out, capsys):
    assert main(["--config", str(path), "reduce", "sxdm", str(scan_id), "--out", str(out), "--quiet"]) == 0, \
        capsys.readouterr().err
    return load_maps(out)


def _assert_same_maps(got, expected):
    for name in MAP_VARS:
        np.testing.assert_allclose(np.asarray(got[name], float), np.asarray(expected[name], float),
                                   rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=name)
    assert int(np.asarray(got["mask"]).sum()) > 0  # the crystal is in the map


@pytest.mark.slow
def test_plain_sxdm_map_in_the_session_reduces_with_the_cli(operator, tmp_path, capsys):
    cfg, path, ns, bragg = operator
    cx, cy = bragg["center_um"]
    etas = list(np.linspace(bragg["eta_start"], bragg["eta_stop"], 5))
    result = ns["RE"](ns["sxdm_map"]([ns["detector"]], ns["pix"], (cx - 0.6, cx + 0.6, 4), ns["piy"],
                                     (cy - 0.4, cy + 0.4, 3), ns["eta"], etas))
    uid = result.run_start_uids[0]
    run = storage.load_run(ns["catalog"], uid)
    assert "setup" not in run.metadata["start"]  # the devices recorded it, not the plan
    setup = ScanSetup.from_run(run)
    assert setup.delta == pytest.approx(bragg["delta"]) and setup.energy_kev == cfg["energy.energy_kev"]
    assert setup.cch == CCH and setup.detector_shape == SHAPE and setup.image_field == "mpx1x4_image"

    maps = _reduce_with_cli(path, run.metadata["start"]["scan_id"], tmp_path / "m.h5", capsys)
    _assert_same_maps(maps, _demo_path_maps(cfg, storage.sxdm_stack(run), bragg["delta"]))


@pytest.mark.slow
def test_plain_grid_scan_in_the_session_reduces_with_the_cli(operator, tmp_path, capsys):
    cfg, path, ns, bragg = operator
    cx, cy = bragg["center_um"]
    e0, e1 = bragg["eta_start"], bragg["eta_stop"]
    result = ns["RE"](ns["bp"].grid_scan([ns["detector"]], ns["eta"], e0, e1, 4, ns["piy"], cy - 0.4, cy + 0.4, 3,
                                         ns["pix"], cx - 0.6, cx + 0.6, 4, snake_axes=[ns["pix"]]))
    run = storage.load_run(ns["catalog"], result.run_start_uids[0])
    stack = storage.sxdm_stack(run)
    # the raster order is right: the measured positions of each reordered point are the nominal grid
    pix, piy = stack.positions["pix"], stack.positions["piy"]
    np.testing.assert_allclose(pix, np.broadcast_to(stack.x, pix.shape), atol=1e-9)
    np.testing.assert_allclose(piy, np.broadcast_to(stack.y[:, None], piy.shape), atol=1e-9)
    np.testing.assert_allclose(stack.eta, np.linspace(e0, e1, 4))

    maps = _reduce_with_cli(path, run.metadata["start"]["scan_id"], tmp_path / "g.h5", capsys)
    _assert_same_maps(maps, _demo_path_maps(cfg, stack, bragg["delta"]))


def test_count_records_the_setup(operator):
    cfg, path, ns, bragg = operator
    uid = ns["RE"](bp.count([ns["detector"]], num=1)).run_start_uids[0]
    setup = ScanSetup.from_run(storage.load_run(ns["catalog"], uid))
    assert setup == ScanSetup.from_config(cfg, delta=bragg["delta"])


def test_reduce_refuses_a_run_that_is_not_a_map_in_one_line(operator, tmp_path, capsys):
    cfg, path, ns, bragg = operator
    uid = ns["RE"](bp.count([ns["detector"]], num=1)).run_start_uids[0]
    capsys.readouterr()
    assert main(["--config", str(path), "reduce", "sxdm", uid, "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an SXDM map" in err[0]
    assert not (tmp_path / "c.h5").exists()


LEGACY = {"uid": "0123abcd", "plan_name": "sxdm_map", "energy_kev": 8.33, "distance_m": 0.5, "pixel_m": 55e-6,
          "cch": [256.0, 250.0], "detector_shape": [512, 512], "delta": 18.0, "nu": 0.0, "phi": 0.0,
          "sample": "nmc622"}


def test_legacy_start_documents_still_load():
    setup = ScanSetup.from_start_doc(LEGACY)
    assert setup == ScanSetup(8.33, 0.5, 55e-6, (256.0, 250.0), (512, 512), 18.0, sample="nmc622")
    geo = setup.geometry()
    # the direct-beam pixel, at all angles zero, is the Q = 0 pixel (independent closed form)
    np.testing.assert_allclose(Geometry(8.33, 0.5, 55e-6, (256.0, 250.0)).q_pixels(256.0, 250.0, 0, 0),
                               np.zeros(3), atol=1e-12)
    np.testing.assert_allclose(geo.q_pixels(256.0, 250.0, 0, 0), np.zeros(3), atol=1e-12)
    assert setup.geometry(window=(200, 300, 100, 400)).cch == (56.0, 150.0)


def test_precedence_setup_then_devices_then_legacy():
    descriptor = {"name": "primary", "data_keys": {"mpx1x4_image": {}},
                  "configuration": {"mpx1x4": {"data": {"mpx1x4_distance_m": 0.8, "mpx1x4_pixel_m": 55e-6,
                                                        "mpx1x4_cch": [100.0, 110.0],
                                                        "mpx1x4_frame_shape": [516, 516]}}}}
    baseline = {"energy": 9.0, "delta": 20.0, "nu": 1.0, "phi": 0.0}
    s = ScanSetup.from_start_doc(LEGACY, [descriptor], baseline)
    assert (s.distance_m, s.cch, s.detector_shape, s.energy_kev, s.delta, s.nu) == \
        (0.8, (100.0, 110.0), (516, 516), 9.0, 20.0, 1.0)
    explicit = ScanSetup(10.0, 1.2, 75e-6, (1.0, 2.0), (10, 20), 30.0, detector="eiger", sample="other")
    doc = {**LEGACY, **explicit.to_start_doc()}
    assert ScanSetup.from_start_doc(doc, [descriptor], baseline) == explicit
    # a detector signal left at its NaN default is not a recording
    descriptor["configuration"]["mpx1x4"]["data"]["mpx1x4_distance_m"] = float("nan")
    assert ScanSetup.from_start_doc(LEGACY, [descriptor], baseline).distance_m == 0.5


def test_missing_fields_are_named_at_once():
    with pytest.raises(SetupError) as err:
        ScanSetup.from_start_doc({"uid": "feedbeef", "plan_name": "count"})
    message = str(err.value)
    assert "run feedbeef" in message and all(f in message for f in REQUIRED_FIELDS)
    with pytest.raises(SetupError, match="delta"):
        ScanSetup.from_config(load_config())
    with pytest.raises(SetupError, match="distance_m must be > 0"):
        ScanSetup(8.0, -1.0, 55e-6, (1, 2), (3, 4), 0.0)
    with pytest.raises(SetupError, match="one per rocking angle"):
        ScanSetup(8.0, 1.0, 55e-6, (1, 2), (3, 4), (1.0, 2.0)).angles(3)


def test_devices_carry_their_geometry(tmp_path):
    from braggscope.devices.factory import make_devices
    from braggscope.simulators.inprocess import make_inprocess_devices

    cfg = load_config()
    cfg.set("detector.cch", [200.0, 300.0])
    det = make_devices(cfg)["detector"]  # not connected: the geometry signals are local
    assert (det.distance_m.get(), det.pixel_m.get(), det.cch.get(), det.frame_shape.get()) == \
        (cfg["detector.distance_m"], cfg["detector.pixel_m"], [200.0, 300.0], list(cfg["detector.shape"]))
    assert {"distance_m", "pixel_m", "cch", "frame_shape"} <= set(det.configuration_attrs)
    devices = make_inprocess_devices(SimulatedBeamline.from_config(cfg), tmp_path)
    setup = ScanSetup.from_devices(devices["mpx1x4"], energy=devices["energy"], delta=devices["delta"])
    assert setup == ScanSetup.from_config(cfg, delta=0.0)
