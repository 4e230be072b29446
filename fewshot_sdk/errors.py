"""User-facing errors.

Every failure a user can cause (a bad folder, a broken checkpoint, a support set
with one class) is raised as a :class:`FewShotError` whose message is one line
naming the culprit and what to do. The CLI prints that line and exits non-zero;
library users catch one exception type instead of torch's internals.
"""

from __future__ import annotations


class FewShotError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InputError(FewShotError, ValueError):
    """The support set, the queries or an argument is unusable."""


class CheckpointError(FewShotError):
    """A checkpoint or saved task is missing, corrupt, or does not match its model."""


class AdaptationError(FewShotError):
    """Adapting to a support set failed numerically (the support loss became NaN or infinite)."""
