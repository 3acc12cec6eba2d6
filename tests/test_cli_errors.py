"""The command line on bad input: one line on stderr, exit status 2, no output left behind; quiet runs.

Each case feeds ``braggscope reduce sxdm`` or ``braggscope reduce bcdi`` a file that cannot be
reduced (a missing detector file, a truncated file, a file that is not HDF5, frames that are all
zero or NaN) and checks the three promises: exit 2, exactly one line naming the problem, and
nothing written (no output file or directory, no temporary file). Subprocess tests check what a
user's terminal shows: ``--version``, and no Channel Access or library noise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from braggscope.app.cli.main import main
from tests.test_readers_sources import map_frames, write_bliss_map, write_bliss_rocking

BRAGGSCOPE = [sys.executable, "-m", "braggscope"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def _expect_refusal(capsys, argv, out: Path, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists(), f"{out} was written"
    assert not _leftovers(out.parent), _leftovers(out.parent)
    return lines[0]


# -- inputs ------------------------------------------------------------------------------------
def _sxdm_file(folder: Path, frames=None, link="vds") -> tuple[Path, list]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "map.h5"
    sources = write_bliss_map(path, map_frames() if frames is None else frames, link=link)
    return path, sources


def _rocking_file(folder: Path, frames=None, link="vds") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rocking.h5"
    frames = map_frames(n_eta=8, ny=1, nx=1)[:, 0, 0] if frames is None else frames
    return path, write_bliss_rocking(path, frames, link=link)


def _truncated(folder: Path, name="cut.h5") -> Path:
    path, _ = _sxdm_file(folder / "whole", link="inline")
    raw = path.read_bytes()
    cut = folder / name
    cut.write_bytes(raw[: len(raw) // 3])
    return cut


SXDM_OPTS = ["--quiet"]
BCDI_OPTS = ["--quiet", "--shape", "none,8,8", "--runs", "1", "--no-figures"]


# -- reduce sxdm -------------------------------------------------------------------------------
def test_sxdm_good_file_reduces_and_writes_everything(tmp_path, capsys):
    path, _ = _sxdm_file(tmp_path / "in")
    out, figs = tmp_path / "res" / "maps.h5", tmp_path / "res" / "figures"
    rc = main(["reduce", "sxdm", str(path), "--out", str(out), "--figures", str(figs), *SXDM_OPTS])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""
    assert out.stat().st_size > 0 and len(list(figs.glob("*.png"))) >= 3
    assert not _leftovers(tmp_path / "res")
    mode = out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the user's umask, not mkstemp's 0600


def test_sxdm_missing_detector_file(tmp_path, capsys):
    path, sources = _sxdm_file(tmp_path / "in")
    sources[2].unlink()
    out = tmp_path / "res" / "maps.h5"
    _expect_refusal(capsys, ["reduce", "sxdm", str(path), "--out", str(out), "--figures", str(tmp_path / "res"),
                             *SXDM_OPTS], out, sources[2].name, "missing")
    assert not (tmp_path / "res").exists()


def test_sxdm_truncated_and_not_hdf5(tmp_path, capsys):
    out = tmp_path / "maps.h5"
    _expect_refusal(capsys, ["reduce", "sxdm", str(_truncated(tmp_path)), "--out", str(out), *SXDM_OPTS],
                    out, "cut.h5", "truncated")
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    _expect_refusal(capsys, ["reduce", "sxdm", str(text), "--out", str(out), *SXDM_OPTS], out,
                    "notes.h5", "not an HDF5 file")


def test_sxdm_truncated_vds_source(tmp_path, capsys):
    path, sources = _sxdm_file(tmp_path / "in")
    raw = sources[1].read_bytes()
    sources[1].write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "maps.h5"
    _expect_refusal(capsys, ["reduce", "sxdm", str(path), "--out", str(out), *SXDM_OPTS], out,
                    sources[1].name, "truncated")


@pytest.mark.parametrize("bad, needle", [("zero", "every frame is zero"), ("nan", "NaN or infinite")])
def test_sxdm_frames_that_cannot_be_reduced(tmp_path, capsys, bad, needle):
    frames = map_frames().astype(np.float32)
    if bad == "zero":
        frames[:] = 0
    else:
        frames[1, 2, 0, 3, 3] = np.nan
    path, _ = _sxdm_file(tmp_path / "in", frames)
    out = tmp_path / "maps.h5"
    line = _expect_refusal(capsys, ["reduce", "sxdm", str(path), "--out", str(out), *SXDM_OPTS], out,
                           "map.h5", needle)
    assert "braggscope reduce sxdm: " in line


def test_sxdm_negative_gap_markers_are_read_as_zero_with_one_warning(tmp_path, capsys):
    frames = map_frames().astype(np.int32)
    frames[..., 5, :] = -1  # a detector row flagged as a gap
    path, _ = _sxdm_file(tmp_path / "in", frames)
    out = tmp_path / "maps.h5"
    rc = main(["reduce", "sxdm", str(path), "--out", str(out), *SXDM_OPTS])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 0 and out.exists()
    assert len(err) == 1 and "warning" in err[0] and "negative values" in err[0]
    assert f"{frames[..., 5, :].size}" in err[0]


def test_sxdm_bad_arguments_and_unreachable_catalog(tmp_path, capsys):
    out = tmp_path / "maps.h5"
    _expect_refusal(capsys, ["reduce", "sxdm", "x.h5", "--out", str(out), "--threshold", "2"], out, "--threshold")
    _expect_refusal(capsys, ["reduce", "sxdm", "x.h5", "--out", str(out), "--median", "abc"], out, "--median")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "remote.toml"
    cfg.write_text(f'[storage]\ntiled_uri = "http://127.0.0.1:{port}"\napi_key = "k"\n'
                   f'data_dir = "{tmp_path / "data"}"\n')
    _expect_refusal(capsys, ["--config", str(cfg), "reduce", "sxdm", "12", "--out", str(out)], out,
                    f"127.0.0.1:{port}", "does not answer")


# -- reduce bcdi -------------------------------------------------------------------------------
def test_bcdi_missing_detector_file(tmp_path, capsys):
    path, src = _rocking_file(tmp_path / "in")
    src.unlink()
    out = tmp_path / "res"
    _expect_refusal(capsys, ["reduce", "bcdi", str(path), "--out", str(out), *BCDI_OPTS], out, src.name, "missing")


def test_bcdi_external_link_to_a_missing_file(tmp_path, capsys):
    path, src = _rocking_file(tmp_path / "in", link="external")
    src.unlink()
    out = tmp_path / "res"
    _expect_refusal(capsys, ["reduce", "bcdi", str(path), "--out", str(out), *BCDI_OPTS], out, src.name, "missing")


def test_bcdi_truncated_empty_and_not_hdf5(tmp_path, capsys):
    out = tmp_path / "res"
    cut = tmp_path / "cut.h5"
    path, _ = _rocking_file(tmp_path / "whole", link="inline")
    raw = path.read_bytes()
    cut.write_bytes(raw[: len(raw) // 3])
    _expect_refusal(capsys, ["reduce", "bcdi", str(cut), "--out", str(out), *BCDI_OPTS], out, "cut.h5", "truncated")
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    _expect_refusal(capsys, ["reduce", "bcdi", str(text), "--out", str(out), *BCDI_OPTS], out, "not an HDF5 file")
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    _expect_refusal(capsys, ["reduce", "bcdi", str(empty), "--out", str(out), *BCDI_OPTS], out, "empty.h5",
                    "no scan")


@pytest.mark.parametrize("bad, needle", [("zero", "every frame is zero"), ("nan", "NaN or infinite"),
                                         ("complex", "complex"), ("negative", "negative")])
def test_bcdi_frames_that_cannot_be_reduced(tmp_path, capsys, bad, needle):
    frames = map_frames(n_eta=8, ny=1, nx=1)[:, 0, 0].astype(np.float64)
    if bad == "zero":
        frames[:] = 0
    elif bad == "nan":
        frames[3, 4, 5] = np.nan
    elif bad == "complex":
        frames = frames.astype(np.complex64)
    else:
        frames -= 50.0  # background-subtracted, not counts
    path, _ = _rocking_file(tmp_path / "in", frames, link="inline")
    out = tmp_path / "res"
    _expect_refusal(capsys, ["reduce", "bcdi", str(path), "--out", str(out), *BCDI_OPTS], out, "rocking.h5", needle)


def test_bcdi_crop_larger_than_the_scan(tmp_path, capsys):
    path, _ = _rocking_file(tmp_path / "in")
    out = tmp_path / "res"
    _expect_refusal(capsys, ["reduce", "bcdi", str(path), "--out", str(out), "--shape", "none,64,64"], out,
                    "--shape", "16")


# -- the terminal: subprocesses ----------------------------------------------------------------
def _env(**extra):
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def test_version():
    r = subprocess.run([*BRAGGSCOPE, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().startswith("braggscope ") and r.stderr == ""
    from braggscope import __version__

    assert r.stdout.strip() == f"braggscope {__version__}"


def test_reduce_and_sim_status_runs_are_quiet(tmp_path):
    path, sources = _sxdm_file(tmp_path / "in")
    r = subprocess.run([*BRAGGSCOPE, "reduce", "sxdm", str(path), "--out", str(tmp_path / "m.h5"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.count("\n") <= 3 and "wrote" in r.stdout
    sources[0].unlink()
    r = subprocess.run([*BRAGGSCOPE, "reduce", "sxdm", str(path), "--out", str(tmp_path / "m2.h5"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env=_env())
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and sources[0].name in r.stderr
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    r = subprocess.run([*BRAGGSCOPE, "--config", str(cfg), "sim", "status"], capture_output=True, text=True,
                       timeout=120, env=_env())
    assert r.returncode == 1 and "not running" in r.stdout and r.stderr == ""


def test_reduce_from_a_new_shared_catalog_says_two_lines(tmp_path):
    """The first ``reduce <scan id>`` of a user starts the shared catalog server: one line says so, one
    line names the missing run, and the server (left running for the next command, by design) is not
    reported as a leaked subprocess."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\ncatalog_server = "auto"\n')
    env = _env(BRAGGSCOPE_CATALOG_SERVER="auto")
    try:
        r = subprocess.run([*BRAGGSCOPE, "--config", str(cfg), "reduce", "sxdm", "5", "--out", str(tmp_path / "m.h5")],
                           capture_output=True, text=True, timeout=300, env=env)
        lines = (r.stdout + r.stderr).strip().splitlines()
        assert r.returncode == 2, lines
        assert len(lines) == 2 and "started the local catalog server" in lines[0], lines
        assert "5: no such run" in lines[1], lines
        assert not (tmp_path / "m.h5").exists()
    finally:
        subprocess.run([*BRAGGSCOPE, "--config", str(cfg), "catalog", "stop"], capture_output=True, timeout=120,
                       env=env)


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CA_NOISE = ("caRepeater", "CA repeater", "Virtual circuit", "CA.Client.Exception")


def test_libca_complains_without_a_repeater_and_not_with_ours():
    """libca looks for a caRepeater executable when none serves the port; ensure_repeater serves one."""
    port = _free_udp_port()
    code = textwrap.dedent("""
        import sys, time
        if sys.argv[1] == "ours":
            from braggscope.devices.ca_client import ensure_repeater
            assert ensure_repeater()
        from ophyd import EpicsSignal
        EpicsSignal("BSTEST:nothing", name="s")  # the first channel: libca registers with a repeater
        time.sleep(1.0)
    """)
    env = _env(EPICS_CA_REPEATER_PORT=port, EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST="127.0.0.1")
    bare = subprocess.run([sys.executable, "-c", code, "bare"], capture_output=True, text=True, timeout=120, env=env)
    if not any(n in bare.stderr for n in CA_NOISE):
        pytest.skip("this libca finds a caRepeater: nothing to silence here")
    ours = subprocess.run([sys.executable, "-c", code, "ours"], capture_output=True, text=True, timeout=120, env=env)
    assert ours.returncode == 0, ours.stderr
    assert not [n for n in CA_NOISE if n in ours.stderr], ours.stderr


def test_repeater_confirms_both_registrations_and_forwards_beacons():
    """libca registers with an empty datagram and waits for a confirmation (else: '... after 50 tries')."""
    import caproto

    from braggscope.devices.ca_client import start_repeater

    port = _free_udp_port()
    assert start_repeater(port) is not None
    assert start_repeater(port) is None  # the port is taken: a second repeater does not start
    parse = caproto.Broadcaster(our_role=caproto.CLIENT)
    a, b, server = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    try:
        for s in (a, b, server):
            s.bind(("127.0.0.1", 0))
            s.settimeout(5.0)
        a.sendto(b"", ("127.0.0.1", port))  # libca's form
        data, _ = a.recvfrom(4096)
        assert any(isinstance(c, caproto.RepeaterConfirmResponse) for c in parse.recv(data, ("127.0.0.1", port)))
        b.sendto(bytes(caproto.RepeaterRegisterRequest("127.0.0.1")), ("127.0.0.1", port))  # caproto's form
        data, _ = b.recvfrom(4096)
        assert any(isinstance(c, caproto.RepeaterConfirmResponse) for c in parse.recv(data, ("127.0.0.1", port)))
        server.sendto(bytes(caproto.Beacon(13, 5064, 7, "0.0.0.0")), ("127.0.0.1", port))
        for client in (a, b):
            data, _ = client.recvfrom(4096)
            beacons = [c for c in parse.recv(data, ("127.0.0.1", port)) if isinstance(c, caproto.Beacon)]
            assert beacons and beacons[0].beacon_id == 7 and beacons[0].address == "127.0.0.1"
    finally:
        for s in (a, b, server):
            s.close()


@pytest.mark.ioc
def test_beamline_over_channel_access_is_quiet(tmp_path):
    """The demo's and the shell's path: start the simulator, connect, move, stop: nothing on stderr from CA."""
    code = textwrap.dedent(f"""
        from braggscope.app.demo.beamline import Beamline
        from braggscope.core.config import load_config
        cfg = load_config()
        cfg.set("storage.data_dir", {str(tmp_path / 'data')!r})
        cfg.set("detector.write_path", {str(tmp_path / 'det')!r})
        cfg.set("detector.read_path", {str(tmp_path / 'det')!r})
        with Beamline(cfg) as bl:
            bl.devices["eta"].set(1.0).wait(30)
            print("eta", bl.devices["eta"].position)
    """)
    env = _env(EPICS_CA_REPEATER_PORT=_free_udp_port())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "eta 1.0" in r.stdout
    assert not [n for n in CA_NOISE if n in r.stderr], r.stderr


def test_small_refusals_name_what_to_change(tmp_path, capsys):
    """A directory given as the input, a config file that is not UTF-8, an output directory the user may not
    write in: one line naming the user's path (never a hidden temporary file)."""
    for kind in ("sxdm", "bcdi"):
        assert main(["reduce", kind, str(tmp_path), "--out", str(tmp_path / "o")]) == 2
        assert f"{tmp_path}: a directory, not an HDF5 file" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[storage]\ndata_dir = "/tmp/caf\u00e9"\n'.encode("latin-1"))
    assert main(["--config", str(latin1), "sim", "status"]) == 2
    err = capsys.readouterr().err
    assert f"config {latin1}: not UTF-8 text (byte 0xe9 at offset 30); save it as UTF-8" in err
    assert "Traceback" not in err
    bogus = tmp_path / "bogus.toml"
    bogus.write_text(f'[simulator]\nsample = "bogus"\n[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    assert main(["--config", str(bogus), "sim", "start"]) == 2
    assert "[simulator] sample = 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "data" / "simulator.json").exists()  # refused before any process started


def test_a_closed_pipe_ends_the_command_quietly():
    """``braggscope sim status | head -1``: no BrokenPipeError traceback when the reader leaves first."""
    code = ("import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)  # stdout: a pipe whose reader is gone\n"
            "from braggscope.app.cli.main import main\n"
            "sys.stderr.write(f'status {main([\"sim\", \"status\"])}\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    assert done.stderr.strip() == "status 141", done.stderr


def test_a_state_file_of_another_data_directory_is_not_its_simulator(tmp_path):
    """``sim stop`` in one data directory never stops the simulator of another whose pid its state file names."""
    import json

    from braggscope.app.beamline.simulator import checked_state

    other = tmp_path / "other" / "simulator.json"
    other.parent.mkdir()
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "braggscope.simulators.ioc_run",
                               "--state-file", str(other)])
    try:
        mine = tmp_path / "simulator.json"
        mine.write_text(json.dumps({"pid": runner.pid, "port": 5064}))
        handle, why = checked_state(mine)
        assert handle is None and f"the simulator of another data directory (its state file: {other})" in why
    finally:
        runner.kill()
        runner.wait()


def test_an_output_that_cannot_be_created_is_named_not_its_temporary(tmp_path):
    """The final file is named in the error (the command line shows it), never the hidden temporary file;
    the same path handles a directory the user may not write in (checked when not running as root)."""
    from braggscope.core.atomic import atomic_outputs, atomic_path

    missing = tmp_path / "not-there"
    for make in (lambda: atomic_path(missing / "maps.h5"), lambda: atomic_outputs(missing / "maps.h5")):
        with pytest.raises(FileNotFoundError) as err:
            with make():
                pass
        assert err.value.filename == str(missing / "maps.h5"), err.value
    if os.geteuid() != 0:  # root may write in a read-only directory
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(PermissionError) as err:
            with atomic_path(ro / "maps.h5"):
                pass
        assert err.value.filename == str(ro / "maps.h5")
