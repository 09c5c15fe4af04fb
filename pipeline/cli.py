"""What every script in solutions/ shares: turning the project's errors into one line and exit code 2."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from pipeline.errors import PipelineError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def guarded(body: Callable[[], int]) -> int:
    """Run `body`; bad input becomes `error: ...` on stderr and exit 2 (no traceback). Bugs still raise."""
    try:
        return body()
    except PipelineError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank refuses; one says why
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value
