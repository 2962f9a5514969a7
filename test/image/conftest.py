"""pytest setup for the container image test: makes `support` and `image_root` importable."""

import pathlib
import sys

_TEST = pathlib.Path(__file__).resolve().parents[1]
for _sub in ("support", "image"):
    if str(_TEST / _sub) not in sys.path:
        sys.path.insert(0, str(_TEST / _sub))
