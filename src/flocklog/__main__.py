"""``python -m flocklog``: the ``flocklog`` command where its console script is not on ``PATH`` (cron, systemd)."""

from flocklog.cli import main

main(prog_name="flocklog")
