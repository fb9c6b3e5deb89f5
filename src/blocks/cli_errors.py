"""From an exception to one line a person can act on, and a documented exit code.

Theory of operation: ``blocks.cli.main`` catches what a command raises and asks ``describe``
for ``(message, exit_code)``; the message has the shape ``error: <what went wrong>: <what to
do>``. The library's own errors (``blocks.core.errors``) map by class, the usual OS errors by
errno; anything else is a bug in blocks and says so (``--debug`` shows its traceback). The
hint may name the address the command was pointed at (``--address``, ``--endpoint``,
``--cluster``) and the block's ``serve`` command, read from the parsed arguments.

The exit codes are part of the command line's interface (docs/core.md, ``blocks --help``).
"""

from __future__ import annotations

import argparse
import errno

from blocks.core import errors as e

__all__ = ["EXIT_CODES", "ExitCode", "describe"]


class ExitCode:
    """The exit codes of ``blocks``; a script may branch on them."""

    OK = 0
    FAILED = 1  # the command ran and reports a failure (a demo part, a scrub that lost data)
    USAGE = 2  # bad flags or arguments
    NOT_FOUND = 3  # the named thing does not exist (key, queue, model, file, benchmark)
    UNAVAILABLE = 4  # cannot reach the server, or it cannot serve now (retry may help)
    AUTH = 5  # credentials missing, wrong, or not allowed
    CONFLICT = 6  # the state does not allow it (exists, version conflict, overloaded)
    LOCAL = 7  # this machine: port busy, directory missing or not writable, disk full
    CORRUPTION = 8  # stored bytes failed a checksum
    INTERNAL = 70  # a bug in blocks: rerun with --debug and report it
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES: tuple[tuple[int, str], ...] = (
    (ExitCode.OK, "success"),
    (ExitCode.FAILED, "the command ran and reports a failure"),
    (ExitCode.USAGE, "bad flags or arguments"),
    (ExitCode.NOT_FOUND, "the named thing does not exist"),
    (ExitCode.UNAVAILABLE, "cannot reach the server, or it cannot serve now"),
    (ExitCode.AUTH, "credentials missing, wrong or not allowed"),
    (ExitCode.CONFLICT, "the current state does not allow it"),
    (ExitCode.LOCAL, "a local resource: busy port, missing or unwritable dir, full disk"),
    (ExitCode.CORRUPTION, "stored bytes failed a checksum"),
    (ExitCode.INTERNAL, "a bug in blocks (rerun with --debug)"),
    (ExitCode.INTERRUPTED, "interrupted"),
)


def _target(args: argparse.Namespace | None) -> str:
    for name in ("address", "endpoint", "cluster", "url"):
        value = getattr(args, name, None)
        if value:
            return str(value)
    return "the server"


def _serve_hint(args: argparse.Namespace | None) -> str:
    block = getattr(args, "command", None)
    target = _target(args)
    if block and block not in ("demo", "bench"):
        return f"is a server running at {target}? start one with `blocks {block} serve`"
    return f"check that {target} is up"


def _credentials_hint(args: argparse.Namespace | None) -> str:
    if getattr(args, "command", None) == "blob":
        return "check --access-key and --secret-key against the server's"
    return "pass the server's token with --token (or --token-file)"


# Hints that know the command better than the error class does: (command, class name).
_COMMAND_HINTS: dict[tuple[str, str], str] = {
    ("inference", "NotFound"): "--model takes smollm2, tiny-random, a .gguf file or a folder",
}


def _library(error: e.BlocksError, args: argparse.Namespace | None) -> tuple[str, str, int]:
    what = str(error)
    command = str(getattr(args, "command", ""))
    for cls in type(error).__mro__:
        if cls.__name__ in ("StorageError", "StorageFull"):
            return (
                what,
                "the server's disk refused the write: free space or check it",
                ExitCode.UNAVAILABLE,
            )
    refused = ("connection refused", "connect call failed")
    if isinstance(error, e.Unavailable) and any(text in what.lower() for text in refused):
        what = f"connection refused by {_target(args)}"
    table: tuple[tuple[type[e.BlocksError], str, int], ...] = (
        (e.InvalidArgument, "check the arguments (see --help)", ExitCode.USAGE),
        (e.NotFound, "check the name, or create it first", ExitCode.NOT_FOUND),
        (e.AlreadyExists, "use the existing one or another name", ExitCode.CONFLICT),
        (e.Conflict, "read the current value and try again", ExitCode.CONFLICT),
        (e.FailedPrecondition, "check the server's state and try again", ExitCode.CONFLICT),
        (e.Unauthenticated, _credentials_hint(args), ExitCode.AUTH),
        (e.PermissionDenied, "use credentials allowed to do this", ExitCode.AUTH),
        (
            e.Timeout,
            "try again, or give it more time (--timeout where offered)",
            ExitCode.UNAVAILABLE,
        ),
        (e.Unavailable, _serve_hint(args), ExitCode.UNAVAILABLE),
        (e.Corruption, "restore from a replica or backup", ExitCode.CORRUPTION),
        (
            e.PeerError,
            "a peer broke the protocol: check its version and its log",
            ExitCode.UNAVAILABLE,
        ),
        (e.Internal, "the server failed: see its log", ExitCode.INTERNAL),
    )
    if isinstance(error, e.Overloaded):
        return (
            what or "server overloaded",
            f"retry after {error.retry_after_ms} ms",
            ExitCode.CONFLICT,
        )
    status = getattr(error, "status", None)  # an HTTP client error (blob's S3 client)
    if isinstance(status, int) and status in (401, 403):
        return what, _credentials_hint(args), ExitCode.AUTH
    if isinstance(status, int) and status == 404:
        return what, "check the bucket and key names", ExitCode.NOT_FOUND
    if isinstance(status, int) and 400 <= status < 500:
        return what, "check the bucket, key and arguments", ExitCode.USAGE
    if isinstance(status, int):
        return what, "the server failed: see its log", ExitCode.UNAVAILABLE
    for cls, hint, code in table:
        if isinstance(error, cls):
            hint = _COMMAND_HINTS.get((command, cls.__name__), hint)
            return what or cls.__name__, hint, code
    return what or type(error).__name__, "see the server's log", ExitCode.FAILED


def _os(error: OSError, args: argparse.Namespace | None) -> tuple[str, str, int]:
    where = f" {error.filename}" if error.filename else ""
    code = error.errno
    if isinstance(error, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return f"connection refused by {_target(args)}", _serve_hint(args), ExitCode.UNAVAILABLE
    if code == errno.EADDRINUSE or type(error).__name__ == "AddressInUse":
        return (
            str(error.args[1] if len(error.args) > 1 else error),
            "stop what holds the port, or pick another with --listen/--metrics-listen",
            ExitCode.LOCAL,
        )
    if isinstance(error, FileNotFoundError) or code == errno.ENOENT:
        return f"no such file or directory:{where}", "check the path, or create it", ExitCode.LOCAL
    if isinstance(error, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}", "use a path this user may write", ExitCode.LOCAL
    if code == errno.ENOSPC:
        return (
            f"no space left on device:{where}",
            "free disk space or use another --data-dir",
            ExitCode.LOCAL,
        )
    if code == errno.EROFS:
        return f"read-only file system:{where}", "use a writable --data-dir", ExitCode.LOCAL
    if isinstance(error, (ConnectionError, TimeoutError)) or code in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
    ):
        reason = error.strerror or type(error).__name__
        return f"cannot reach {_target(args)}: {reason}", _serve_hint(args), ExitCode.UNAVAILABLE
    reason = error.strerror or str(error) or type(error).__name__
    return (
        f"{reason}{':' + where if where else ''}",
        "check the path or the address",
        ExitCode.LOCAL,
    )


def describe(error: BaseException, args: argparse.Namespace | None = None) -> tuple[str, int]:
    """``("error: <what went wrong>: <what to do>", exit code)`` for ``error``."""
    if isinstance(error, e.BlocksError):
        what, hint, code = _library(error, args)
    elif isinstance(error, OSError):
        what, hint, code = _os(error, args)
    elif isinstance(error, ValueError):
        what, hint, code = str(error), "check the arguments (see --help)", ExitCode.USAGE
    else:
        what = f"unexpected {type(error).__name__}: {error}"
        hint = "this is a bug in blocks; rerun with --debug and report the traceback"
        code = ExitCode.INTERNAL
    what = " ".join(what.split())  # one line, whatever the error text held
    return f"error: {what}: {hint}", code
