"""The contract between device, driver and host: register map and uapi header parsers."""
