"""The bottom layer: geometry, configuration, eccentricity, the scan setup and storage.

Nothing here imports a wing (devices, plans, simulators, analysis) or an
application (``braggscope.app``).
"""
