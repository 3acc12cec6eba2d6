"""The command line's session log, ``--log-level``, progress bars off a terminal, completion, ``python -m``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import braggscope.app.cli.catalog as catalog_command
from braggscope.app.cli.main import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAGGSCOPE_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


def only_log(log_dir) -> str:
    logs = list(log_dir.glob("*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def test_an_expected_error_is_one_line_and_its_traceback_is_in_the_log(log_dir, tmp_path, capsys):
    missing = tmp_path / "nothing.h5"
    assert main(["reduce", "sxdm", str(missing), "--out", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("braggscope reduce sxdm: ") and "nothing.h5" in err
    text = only_log(log_dir)
    assert f"run: braggscope reduce sxdm {missing}" in text
    assert "Traceback (most recent call last)" in text and "nothing.h5" in text
    assert "-braggscope-reduce-sxdm.log" in next(log_dir.glob("*.log")).name


def test_a_bug_is_one_line_naming_the_log_which_holds_the_traceback(log_dir, monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("the status file\nis odd")

    monkeypatch.setattr(catalog_command, "_status", broken)
    assert main(["catalog", "status"]) == 1
    err = capsys.readouterr().err
    log_file = next(log_dir.glob("*.log"))
    assert err == f"braggscope catalog: error: RuntimeError: the status file; is odd (a bug; the traceback is in " \
                  f"{log_file})\n"
    text = log_file.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text and "RuntimeError" in text


def test_log_level_sets_what_the_terminal_shows(log_dir, monkeypatch, capsys):
    def chatty(args):
        logging.getLogger("braggscope.test").info("step one done")
        logging.getLogger("braggscope.test").debug("detail")
        logging.getLogger("somelibrary").info("library chatter")
        return 0

    monkeypatch.setattr(catalog_command, "_status", chatty)
    assert main(["catalog", "status"]) == 0
    assert capsys.readouterr().err == ""  # default: warnings and errors only
    assert main(["--log-level", "info", "catalog", "status"]) == 0
    err = capsys.readouterr().err
    assert "braggscope catalog: info: step one done\n" in err and "detail" not in err
    logs = sorted(log_dir.glob("*.log"))
    assert len(logs) == 2 and all("step one done" in p.read_text() for p in logs)
    assert not any("library chatter" in p.read_text() or "detail" in p.read_text() for p in logs)
    assert main(["--log-level", "debug", "catalog", "status"]) == 0
    assert "detail" in capsys.readouterr().err


def test_a_warning_is_one_line_on_the_terminal_and_in_the_log(log_dir, monkeypatch, capsys):
    import warnings

    def warns(args):
        warnings.warn("frames look odd", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(catalog_command, "_status", warns)
    assert main(["catalog", "status"]) == 0
    assert capsys.readouterr().err == "braggscope catalog: warning: frames look odd\n"
    assert "frames look odd (UserWarning" in only_log(log_dir)


def test_no_log_file_when_the_log_directory_is_empty(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("BRAGGSCOPE_LOG_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["reduce", "sxdm", str(tmp_path / "x.h5"), "--out", str(tmp_path / "m.h5")]) == 2
    assert not list(tmp_path.rglob("*.log"))


BAR = """
    import time
    {enter}
    from tqdm.auto import tqdm
    for _ in tqdm(range(400), desc="reduce"):
        time.sleep(0.005)
"""


@pytest.mark.parametrize("as_lines", [False, True])
def test_a_bar_off_a_terminal_writes_a_few_lines(as_lines):
    enter = ("from braggscope.app.cli.logs import bars_as_lines\n    bars = bars_as_lines()\n    bars.__enter__()"
             if as_lines else "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(BAR.format(enter=enter))], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    refreshes = r.stderr.count("\r") + r.stderr.count("\n")
    if as_lines:  # the first and the last state, each on a line of its own
        assert "\r" not in r.stderr and r.stderr.count("\n") <= 3, r.stderr
        assert r.stderr.splitlines()[-1].startswith("reduce: 100%") and "400/400" in r.stderr
    else:  # tqdm's own default: ten refreshes a second
        assert refreshes >= 10, r.stderr


def test_bash_completion_completes_commands_options_and_choices(tmp_path):
    script = subprocess.run([sys.executable, "-m", "braggscope", "completion", "bash"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path, env={**os.environ, "BRAGGSCOPE_LOG_DIR": ""})
    assert script.returncode == 0, script.stderr
    (tmp_path / "completion.sh").write_text(script.stdout)
    probe = textwrap.dedent("""
        source completion.sh
        t() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _braggscope
              echo "${COMPREPLY[*]}"; }
        t braggscope re
        t braggscope reduce ""
        t braggscope reduce sxdm --thr
        t braggscope --log-level ""
        t braggscope --config site.toml demo ""
        t braggscope reduce sxdm ""
    """)
    r = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    reductions, demos = (" ".join(_choices(name)) for name in ("reduce", "demo"))
    assert reductions.startswith("sxdm bcdi") and demos.startswith("sxdm bcdi")
    assert r.stdout.splitlines() == ["reduce", reductions, "--threshold", "debug info warning error", demos,
                                     ""]  # the last: a file name (bash's default completion)


def _choices(command: str) -> list[str]:
    """The choices of a command's first positional argument (``reduce KIND``, ``demo KIND``), from the parser."""
    from braggscope.app.cli.main import build_parser
    from braggscope.core.compat import parser_actions

    parser = next(a for a in parser_actions(build_parser()) if isinstance(a.choices, dict)).choices[command]
    first = next(a for a in parser_actions(parser) if not a.option_strings and a.choices)
    return list(first.choices)


def test_python_m_braggscope_is_the_command():
    r = subprocess.run([sys.executable, "-m", "braggscope", "--version"], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0 and r.stdout.startswith("braggscope ")


def test_the_session_log_gets_each_cell_and_each_failure_with_its_traceback(caplog):
    from IPython.core.interactiveshell import InteractiveShell

    from braggscope.app.session.cell_log import load_ipython_extension

    shell = InteractiveShell.instance()
    try:
        load_ipython_extension(shell)
        with caplog.at_level(logging.INFO, logger="braggscope"):
            shell.run_cell("x = 1 + 1")
            shell.run_cell("1 / 0")
    finally:
        InteractiveShell.clear_instance()
    cells = [r for r in caplog.records if r.name == "braggscope.session"]
    assert [r.getMessage().split(": ", 1)[1] for r in cells] == ["x = 1 + 1", "1 / 0"]
    failed = [r for r in caplog.records if getattr(r, "file_only", False)]
    assert len(failed) == 1 and "ZeroDivisionError" in failed[0].getMessage() and failed[0].exc_info[2] is not None
