"""``braggscope serve`` and queued operation: the beamline's services, the queue server's profile and client."""
