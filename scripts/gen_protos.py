"""Generate (or check) the committed Python modules for every ``src/blocks/**/*.proto``.

    python scripts/gen_protos.py          # regenerate in place
    python scripts/gen_protos.py --check  # exit 1 if a committed module is stale or missing

The generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` are committed so that users
need no protoc; CI runs ``--check`` (through the test suite) so they never drift.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(SRC.glob("blocks/**/*.proto"))
    for proto in protos:
        args = [
            "protoc",
            f"-I{SRC}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto.relative_to(SRC)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")
    return protos


def generated_names(protos: list[Path]) -> list[Path]:
    names = []
    for proto in protos:
        relative = proto.relative_to(SRC)
        stem = relative.with_suffix("")
        names += [stem.parent / (stem.name + suffix) for suffix in SUFFIXES]
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        protos = generate(out)
        stale = []
        for name in generated_names(protos):
            fresh, committed = out / name, SRC / name
            if args.check:
                if not committed.exists() or not filecmp.cmp(fresh, committed, shallow=False):
                    stale.append(str(name))
            else:
                shutil.copyfile(fresh, committed)
        if stale:
            print("stale generated modules (run `make proto`):", *stale, sep="\n  ")
            return 1
    print(f"{len(protos)} proto files {'checked' if args.check else 'generated'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
