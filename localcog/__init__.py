"""Run the model package under Cog without Docker: coglet's HTTP server started from this
repository (`server`), the OpenAPI schema `cog build` would write (`schema`), and the process
and loopback helpers everything local is started with (`processes`, `loopback`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository: cog.yaml, predict.py, weights/
