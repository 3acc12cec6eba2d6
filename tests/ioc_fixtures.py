"""IOC fixtures (caproto simulators on loopback), shared by device, plan and storage tests."""
