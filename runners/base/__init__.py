"""The base of ``runners/``: what ``agents/`` and ``envs/`` may import (errors, atomic files, the
options parser, run directories, random streams, console lines, tracking). It imports nothing of
``agents/``, ``envs/`` or the commands above it."""
