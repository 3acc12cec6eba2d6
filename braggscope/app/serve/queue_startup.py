"""The queue server's startup directory for braggscope: a one-line startup script and the permissions.

The queue server (``start-re-manager --startup-dir``) executes the script in its worker process,
which builds the worker's namespace from :mod:`braggscope.app.serve.queue_profile`.
``braggscope serve`` writes the directory before it starts the queue server.
"""

from __future__ import annotations

from pathlib import Path

from braggscope.core.atomic import atomic_path

__all__ = ["PERMISSIONS", "STARTUP_SCRIPT", "write_startup_dir"]

#: Startup script written by :func:`write_startup_dir` (the worker executes it).
STARTUP_SCRIPT = """\
# braggscope queue profile (written by braggscope.app.serve.queue_startup.write_startup_dir; do not edit)
from braggscope.app.serve.queue_profile import build_namespace as _build_namespace

globals().update(_build_namespace())
"""

#: Who may run what (bluesky-queueserver's format): every plan and device of the profile, nothing private;
#: of the functions, only the queue shell's two (braggscope.app.serve.queue_commands).
PERMISSIONS = """\
user_groups:
  root:
    allowed_plans: [null]
    forbidden_plans: [":^_"]
    allowed_devices: [null]
    forbidden_devices: [":^_:?.*"]
    allowed_functions: [null]
    forbidden_functions: [":^_"]
  primary:
    allowed_plans: [":.*"]
    forbidden_plans: [null]
    allowed_devices: [":?.*:depth=3"]
    forbidden_devices: [null]
    allowed_functions: ["shell_read", "command_reply"]
    forbidden_functions: [null]
"""


def write_startup_dir(path) -> Path:
    """Write the startup directory of the queue server (script + permissions) at ``path``.

    Parameters
    ----------
    path : path-like
        Directory (created); ``existing_plans_and_devices.yaml`` is written
        there by the queue server when its environment opens.

    Returns
    -------
    pathlib.Path
        The directory.
    """
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (("00_braggscope.py", STARTUP_SCRIPT), ("user_group_permissions.yaml", PERMISSIONS)):
        with atomic_path(path / name) as tmp:
            tmp.write_text(text)
    return path
