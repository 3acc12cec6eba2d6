"""The applications on top: the command line, the operator shell, the demos, the simulator control.

They wire the wings (devices, plans, simulators, analysis) and the core together.
"""
