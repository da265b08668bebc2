"""The public home of the error tree (`boxlite.errors.PortalError`, ...); also exported from `boxlite`.

Tracebacks name these classes `boxlite.errors.<Name>`; see boxlite/_errors.py for the tree.
"""

from boxlite._errors import *  # noqa: F403
from boxlite._errors import __all__ as __all__
