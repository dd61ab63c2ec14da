"""`python -m maaslab.distributed.worker FOLDER RANK`: one rank of a job that `run_ranks` wrote.

`maaslab.distributed.gradients.run_ranks` starts one of these per rank, as a fresh interpreter
(see maaslab.distributed.ranks for why never a fork). A MaaslabError prints one `error: ...`
line, which the launcher reports, and exits with code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from maaslab.distributed.gradients import rank_main
from maaslab.errors import MaaslabError


def main(argv: Sequence[str] | None = None) -> int:
    """Run rank RANK of the job in FOLDER; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m maaslab.distributed.worker FOLDER RANK", file=sys.stderr)
        return 2
    try:
        rank_main(args[0], int(args[1]))
    except MaaslabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
