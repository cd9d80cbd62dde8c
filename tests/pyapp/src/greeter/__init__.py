"""Says hello, and where it runs from (the test checks both)."""

import os
import sys
from importlib.metadata import version


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(f"hello, {name}, from greeter {version('greeter')} as uid {os.getuid()} "
          f"in {sys.prefix}")
