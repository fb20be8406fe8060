"""``python -m tfm`` and the ``tfm`` script: ``tfm sweep ...`` runs a sweep (:mod:`tfm.sweep`), every other command
goes to the LightningCLI (:mod:`tfm.cli`). The one place that knows both: ``sweep`` uses the CLI, never the reverse."""

from __future__ import annotations

import sys

from .cli import TFMCLI
from .cli import main as cli_main
from .errors import UserError
from .sweep import main as sweep_main


def main(args: list[str] | None = None) -> TFMCLI | None:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] != ["sweep"]:
        return cli_main(args)
    try:
        sweep_main(argv[1:])
    except UserError as e:
        print(f"tfm: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return None


if __name__ == "__main__":
    main()
