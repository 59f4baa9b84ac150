"""pytest wiring: the plugin, helpers for guest tests, the qtest device rig, log slices."""
