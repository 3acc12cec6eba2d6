"""The applications on top: the command line, the operator's session, the services, the bus, the demos.

One package each (``cli``, ``session``, ``serve``, ``bus``, ``demo``) on a shared ``beamline``
package (devices connected, the simulator process, a recording RunEngine); they wire the wings
(devices, plans, simulators, analysis), the storage and the core together.
"""
