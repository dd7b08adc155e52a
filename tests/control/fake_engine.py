"""A fake ``podman``/``docker`` CLI for the executor tests (copied, executable, into tmp_path).

Every call appends its argv as a JSON line to ``<this file>.argv``. ``run`` executes the
command after the image (``--entrypoint`` first, if given) as a plain process with only the
``-e`` variables and PATH, so logs and exit codes work; ``stop`` exits 0, or answers "no
such container" with code 125 when ``<this file>.missing`` exists.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_WITH_VALUE = {
    "--name",
    "--label",
    "-e",
    "--mount",
    "--entrypoint",
    "--device",
    "--runtime",
    "--ulimit",
}


def main(argv: list[str]) -> int:
    me = Path(__file__)
    with open(me.with_name(me.name + ".argv"), "a", encoding="utf-8") as record:
        record.write(json.dumps(argv) + "\n")
    if argv[:1] == ["stop"]:
        if me.with_name(me.name + ".missing").exists():
            print(f"Error: no container with name {argv[-1]!r}: no such container", file=sys.stderr)
            return 125
        return 0
    if argv[:1] != ["run"]:
        print(f"fake engine: unsupported command {argv}", file=sys.stderr)
        return 125
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    entrypoint: list[str] = []
    i = 1
    while argv[i].startswith("-"):
        if argv[i] in _WITH_VALUE:
            if argv[i] == "-e":
                name, _, value = argv[i + 1].partition("=")
                env[name] = value
            elif argv[i] == "--entrypoint":
                entrypoint = [argv[i + 1]]
            i += 2
        else:
            i += 1
    command = [*entrypoint, *argv[i + 1 :]]  # argv[i] is the image
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
