"""The beamline every application works with: devices connected, the simulator process, a RunEngine's setup."""
