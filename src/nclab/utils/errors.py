"""User-facing errors.

Anything a user can cause (bad path, bad config, corrupt archive) raises :class:`NclabError` with a
one-line message that names the problem and the fix. The CLI prints ``error: <message>`` and exits 2;
programming errors keep their tracebacks.
"""


class NclabError(Exception):
    """A problem with the user's input: the message is one line naming the problem and the fix."""


class RunPaused(Exception):
    """A run stopped cleanly at its time limit (``train.time_limit_s``) with a checkpoint; ``--resume`` continues
    it. Not an error: the CLI prints the message and exits with ``EXIT_PAUSED``."""


EXIT_PAUSED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, the user is invited to retry"
