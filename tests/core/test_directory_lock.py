"""DirectoryLock: one holder at a time, in this process or another, free again on release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from blocks.core.directory_lock import DirectoryLock
from blocks.core.errors import FailedPrecondition


def test_a_second_lock_is_refused_until_the_first_is_released(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path)
    assert first.held and Path(first.path) == tmp_path / "LOCK"
    with pytest.raises(FailedPrecondition, match="already open for writing"):
        DirectoryLock(tmp_path)
    DirectoryLock(tmp_path, name="other.lock").release()  # another lock file is another lock
    first.release()
    first.release()  # idempotent
    assert not first.held
    DirectoryLock(tmp_path).release()


def test_another_process_is_refused_while_it_is_held(tmp_path: Path) -> None:
    lock = DirectoryLock(tmp_path)
    code = (
        "import sys\n"
        "from blocks.core.directory_lock import DirectoryLock\n"
        "from blocks.core.errors import FailedPrecondition\n"
        "try:\n"
        "    DirectoryLock(sys.argv[1])\n"
        "except FailedPrecondition:\n"
        "    sys.exit(3)\n"
    )
    refused = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert refused.returncode == 3
    lock.release()


def test_a_directory_that_is_not_there_raises_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DirectoryLock(tmp_path / "missing")
