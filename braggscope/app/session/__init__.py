"""``braggscope shell``: the operator's session (namespace, IPython magics, live figures)."""
