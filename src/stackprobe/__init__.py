"""stackprobe: contract checks, coverage and health for the infrastructure under your application.

The public API is defined here once; everything else is an implementation detail.
"""

from stackprobe.check import CheckContext, CheckFailed, Outcome, Severity, check_for
from stackprobe.errors import ConfigError, ServiceError, StackprobeError

__version__ = "0.1.0"

__all__ = [
    "CheckContext",
    "CheckFailed",
    "ConfigError",
    "Outcome",
    "ServiceError",
    "Severity",
    "StackprobeError",
    "__version__",
    "check_for",
]
