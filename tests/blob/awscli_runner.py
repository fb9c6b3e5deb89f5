"""Run aws CLI commands one after another in one process: ``python awscli_runner.py``.

Each line on stdin is a JSON list of arguments (what follows ``aws`` on a command line); each
answer on stdout is one JSON line ``{"rc": int, "stdout": str, "stderr": str}``. Every command
goes through the CLI's own entry point (``awscli.clidriver.create_clidriver().main(argv)``,
what the ``aws`` script runs) with a fresh session, so it reads the environment and the
configuration files as a new ``aws`` process would; only the loader of botocore's bundled
data files is shared (see ``main``). Why a runner: starting ``aws`` costs two
seconds of imports on a loaded two-core machine, and the tests run some thirty commands.

Not imported by the tests: awscli installs an import hook that makes ``import botocore``
load its own vendored copy, which must not leak into the test process's boto3.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys


def main() -> None:
    clidriver = importlib.import_module("awscli.clidriver")
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    loader = None
    for line in sys.stdin:
        argv = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        driver = clidriver.create_clidriver()
        # The session is new; only botocore's loader of its bundled JSON (service models,
        # endpoints, paginators: read-only files) is kept from the first command. Loading
        # them again cost 0.15-0.3 s of CPU a command, against 0.04 s for the rest.
        if loader is None:
            loader = driver.session.get_component("data_loader")
        else:
            driver.session.register_component("data_loader", loader)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = int(driver.main(argv))
            except SystemExit as exit_:  # argparse errors exit
                rc = exit_.code if isinstance(exit_.code, int) else 2
        answers.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}))
        answers.write("\n")
        answers.flush()


if __name__ == "__main__":
    main()
