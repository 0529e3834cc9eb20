"""audit: every account's audit log, built from every message on the bus."""
