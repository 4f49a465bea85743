"""The example application: one task that logs."""
