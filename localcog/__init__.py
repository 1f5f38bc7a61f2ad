"""Local tooling. First, the model package under Cog without Docker: coglet's HTTP server
started from this repository (`server`), in the foreground for `make serve` (`serve`), and the
OpenAPI schema `cog build` would write (`schema`). Then the helpers everything local is started
and waited for with, by the stand-in, the tests and the benchmarks alike: `processes`,
`loopback`, `polling`, and scratch PostgreSQL databases (`postgres`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the repository: cog.yaml, predict.py, weights/
