"""Deprecated alias of :mod:`flocklog.stamps` (the stamp format ``flocklog verify`` reads), kept for one release.

The stamps are used by the production ``verify`` command, not only by tests, so they moved to a name that says
what they are. Importing this module warns once with :class:`DeprecationWarning`; it will be removed in the next
release.
"""

from __future__ import annotations

import sys
import warnings

from flocklog.stamps import *  # noqa: F403  # the alias re-exports exactly the new module's public names
from flocklog.stamps import __all__ as __all__

warnings.warn(
    "flocklog.testing is deprecated and will be removed in the next release: import flocklog.stamps instead",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    from flocklog.stamps import main

    sys.exit(main())
