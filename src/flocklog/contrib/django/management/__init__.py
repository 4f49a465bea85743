"""Django management commands shipped by flocklog (found through the ``flocklog.contrib.django`` app)."""
