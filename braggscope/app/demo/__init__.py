"""``braggscope demo sxdm|bcdi``: the whole chain on the simulated beamline."""
