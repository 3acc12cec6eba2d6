"""The operator walkthrough of docs/quickstart.md, typed into `braggscope shell` in a pseudo-terminal.

The lines come from the page's two console blocks (so the page and the test cannot drift
apart): the first terminal's commands and shell lines, then the second terminal's reduction,
run while the shell is open. After them, a second map is recorded while another process
reduces the first one. The simulator and the local catalog server run on 127.0.0.1 in the
test's own data directory and are stopped at the end.
"""

import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"
PROMPT = r"In \[\d+\]: "


def walkthrough_blocks() -> tuple[list[str], list[str]]:
    """The two ``console`` blocks of the page's "Operator walkthrough" section."""
    text = DOC.read_text()
    section = text.split("## Operator walkthrough", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```console\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "docs/quickstart.md: the walkthrough needs two console blocks"
    return [b.strip().splitlines() for b in blocks]


def _env(tmp_path) -> dict:
    config = tmp_path / "braggscope.toml"
    config.write_text(textwrap.dedent(f"""
        [storage]
        data_dir = "{tmp_path / 'data'}"
        [detector]
        write_path = "{tmp_path / 'data' / 'detector'}"
        read_path = "{tmp_path / 'data' / 'detector'}"
        [simulator]
        realtime = false
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("BRAGGSCOPE_CATALOG_SERVER", "DISPLAY",
                                                           "WAYLAND_DISPLAY")}
    env.update(BRAGGSCOPE_CONFIG=str(config), IPY_TEST_SIMPLE_PROMPT="1", MPLBACKEND="Agg", TERM="dumb",
               COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


def _command(line: str) -> list[str]:
    assert line.startswith("$ braggscope "), line
    return [sys.executable, "-m", "braggscope.app.cli", *shlex.split(line[len("$ braggscope "):])]


#: BLISS-style commands and bluesky's magics typed into the same session, with what each must print
BLISS_LINES = [
    ("ct(0.01, xrf)", r"xrf_counts\s+\d"),
    ("ct(xrf)", r"xrf_counts\s+\d"),
    ("lineup(pix, -2, 2, 16, 0.01, xrf)", r"pix moved from [-\d.]+ to [-\d.]+ um\s.*Out\[\d+\]: [-\d.]+"),
    ("cen()", r"cen of scan \d+ \(xrf_counts\): pix [-\d.]+ um.*Out\[\d+\]: [-\d.]+"),
    ("fwhm()", r"fwhm of scan \d+ \(xrf_counts\).*Out\[\d+\]: [\d.]+"),
    ("peaks.cen", r"Out\[\d+\]: \{'xrf_counts': (np\.float64\()?[-\d.]+"),
    ("goto_com()", r"pix moved from"),
    ("dmesh(pix, -0.5, 0.5, 2, piy, -0.5, 0.5, 1, 0.01, xrf, backnforth=True)", r"Out\[\d+\]: RunEngineResult"),
    ("wa()", r"Current Positions: user\s+dial\s+pix\s+piy"),
    ("wm(pix, eta)", r"User\s+High.*Current.*Offset.*Dial"),
    ("%wa motors", r"motors\s+Positioner"),
    ("%ct detectors", r"This data will not be saved"),
    ('RE.md["proposal"] = "hc-1234"', ""),
]


def _bliss_commands(shell, cfg):
    """BLISS's commands (return values, goto_*, counters after the count time, dmesh, lineup, wa/wm) and
    bluesky's label magics in the running session; RE.md kept in the data directory."""
    from braggscope.storage.session_md import MD_FILE, PersistentMetadata

    for line, expected in BLISS_LINES:
        shell.sendline(line)
        shell.expect(PROMPT, timeout=300)
        out = shell.before
        assert "Traceback" not in out and "Error" not in out, f"{line}: {out[-3000:]}"
        assert re.search(expected, out, re.S), f"{line}: {out[-3000:]}"
    md = PersistentMetadata(cfg.expand_path("storage.data_dir") / MD_FILE)
    assert md["proposal"] == "hc-1234"  # read by another process


def test_operator_walkthrough(tmp_path):
    from braggscope import storage
    from braggscope.core.config import load_config
    from braggscope.storage import server as catalog_server
    from braggscope.storage.runs import Runs

    first, second = walkthrough_blocks()
    env = _env(tmp_path)
    cfg = load_config(env["BRAGGSCOPE_CONFIG"])
    shell_at = first.index("$ braggscope shell")
    shell = None
    try:
        for line in first[:shell_at]:  # the simulator, serving the named sample
            done = subprocess.run(_command(line), capture_output=True, text=True, env=env, timeout=300,
                                  cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert "sample   nmc622" in done.stdout
        shell = pexpect.spawn(sys.executable, ["-m", "braggscope.app.cli", "shell"], env=env, cwd=str(tmp_path),
                              encoding="utf-8", timeout=600, dimensions=(50, 200))
        log = []
        shell.expect(PROMPT, timeout=600)
        log.append(shell.before)
        assert "braggscope session" in shell.before and "local catalog server" in shell.before
        outputs = []
        for line in first[shell_at + 1:]:
            match = re.fullmatch(r"In \[\d+\]: (.*)", line)
            assert match, f"docs/quickstart.md: not a shell line: {line!r}"
            shell.sendline(match.group(1))
            shell.expect(PROMPT, timeout=900)
            out = shell.before
            log.append(out)
            assert "Traceback" not in out, "".join(log)[-4000:]
            outputs.append((match.group(1), out))
        printed = dict(outputs)
        # each goto_cen() moved to the peak of the scan before it: the crystal (1.8 um wide at 50, 50 um) in
        # x and y, then the rocking curve (theta = 9.03 deg); within one step of the simulator's truth
        centres = [float(re.search(r"Out\[\d+\]: ([-\d.eE+]+)", out).group(1))
                   for cmd, out in outputs if cmd == "goto_cen()"]
        assert abs(centres[0] - 50.0) <= 0.5 and abs(centres[1] - 50.0) <= 0.5, centres
        assert abs(centres[2] - 9.031) <= 0.05, centres
        assert "ROI: rows 236:276, cols 236:276" in printed["roi(detector, 236, 276, 236, 276)"]
        calibration = [out for cmd, out in outputs if cmd.startswith("calibrate(")][0]
        assert "ACCEPTED" in calibration or "REJECTED" in calibration
        live_maps = cfg.expand_path("storage.data_dir") / "live" / "maps.png"
        assert "maps.png" in "".join(log) and live_maps.exists()

        # what landed in the catalog (read from this third process through the shared server)
        db = Runs(storage.open_catalog(cfg))
        runs = list(reversed(list(db)))
        starts = [r.metadata["start"] for r in runs]
        assert [s["scan_id"] for s in starts] == list(range(1, len(starts) + 1))
        assert [s["plan_name"] for s in starts] == ["scan", "scan", "scan", "sxdm_map", "sxdm_map"]
        assert starts[3].get("purpose") == "eccentricity_calibration"
        final = runs[-1]
        assert final.metadata["start"]["sample"] == "nmc622" and final.metadata["start"]["shape"] == [5, 8, 8]
        assert final.metadata["stop"]["exit_status"] == "success"
        assert final.metadata["stop"]["num_events"]["primary"] == 320
        assert starts[-1]["uid"][:8] in printed["db[-1]"]

        # the second terminal, the shell still open
        for line in second:
            done = subprocess.run(_command(line), capture_output=True, text=True, env=env, timeout=900,
                                  cwd=tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
        assert (tmp_path / "maps.h5").stat().st_size > 0 and list((tmp_path / "figs").glob("*.png"))

        # a reduction from another process while the shell records a map
        shell.sendline('sxdm((49, 51, 12), (49, 51, 12), [8.85, 8.95, 9.05, 9.15, 9.25], sample="nmc622")')
        deadline = time.monotonic() + 300
        while len(db) < len(runs) + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        reduce = subprocess.run(_command(f"$ braggscope reduce sxdm {starts[-1]['scan_id']} --out again.h5"),
                                capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
        recording = db[-1]
        assert recording.metadata["start"]["scan_id"] == starts[-1]["scan_id"] + 1
        still_open = recording.metadata.get("stop") is None
        assert reduce.returncode == 0, reduce.stderr[-3000:]
        assert (tmp_path / "again.h5").exists()
        shell.expect(PROMPT, timeout=900)
        assert "Traceback" not in shell.before
        assert still_open, "the map ended before the reduction did: nothing was read while it was recorded"
        _bliss_commands(shell, cfg)
        shell.sendline("exit")
        shell.expect(pexpect.EOF, timeout=120)
        shell.close()
        # the session's cleanup ran and the process ended normally (not aborted by a live thread at exit)
        assert "Traceback" not in shell.before, shell.before[-3000:]
        assert (shell.exitstatus, shell.signalstatus) == (0, None), shell.before[-3000:]
    finally:
        if shell is not None and shell.isalive():
            shell.terminate(force=True)
        subprocess.run(_command("$ braggscope sim stop"), capture_output=True, env=env, timeout=120)
        catalog_server.stop_server(cfg)
    assert catalog_server.server_status(cfg)[0] is None
