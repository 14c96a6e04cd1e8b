"""Every shared test helper (paths, ports, datasets, service drivers, doubles); no fixtures."""
