"""Errors the CLI turns into one clear line and a documented exit code."""

# Exit codes, documented in docs/cli.md. Keep them stable: schedulers and AWX wrappers branch on them.
EXIT_OK = 0
EXIT_HOST_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_ENVIRONMENT = 4  # the controller or lab cannot do what was asked (missing tool, busy port, broken file)
EXIT_INTERRUPTED = 130


class DeskguardError(Exception):
    """An expected failure: the message is shown as one line, without a traceback."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(DeskguardError):
    exit_code = EXIT_USAGE


class LabError(DeskguardError):
    exit_code = EXIT_ENVIRONMENT
