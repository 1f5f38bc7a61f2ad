"""What the real `cog build` checks before it builds, applied here without the CLI or Docker.

Both rules are read in Cog's Go source (replicate/cog, main of 2026-08): the torch → CUDA
choice (`pkg/config/config.go`, `compatibility.go`) and the static parser that writes the
OpenAPI schema (`pkg/schema/python/literals.go`, `parseStringLiteral`).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path
from typing import Any

import pytest
import yaml

from embedder.engine import MAX_TOKENS
from localcog import REPO
from localcog.server import CogServerError, concurrency_max
from predict import MAX_CONCURRENCY, MAX_TEXTS, MAX_TOTAL_BYTES
from tests.support import DATA

TORCH_TABLE: list[dict[str, Any]] = json.loads((DATA / "cog_torch_compatibility.json").read_text())
CUDA_IMAGES: list[dict[str, Any]] = json.loads((DATA / "cog_cuda_compatibility.json").read_text())
MIN_CUDA_MAJOR = 11  # config.go: MinimumMajorCudaVersion


# --- torch and CUDA -------------------------------------------------------------------------


def version_parts(version: str) -> list[int]:
    return [int(part) for part in version.split("+")[0].split(".")]


def matches(a: str, b: str) -> bool:
    """Cog's version.Matches: same major and minor, and same patch where both have one."""
    pa = version_parts(a)
    pb = version_parts(b)
    return pa[:2] == pb[:2] and (len(pa) < 3 or len(pb) < 3 or pa[2] == pb[2])


def cudas_for_torch(torch: str) -> list[str]:
    """Cog's cudasFromTorch: the CUDA lines its table lists for this torch version."""
    return [row["CUDA"] for row in TORCH_TABLE if row["CUDA"] and matches(torch, row["Torch"])]


def base_image(cuda: str) -> str | None:
    """Cog's latestCuDNNForCUDA then cudaBaseImageFor: the newest matching CUDA, newest Ubuntu."""
    images = [i for i in CUDA_IMAGES if matches(cuda, i["CUDA"])]
    if not images:
        return None
    cudnn = max(images, key=lambda i: int(i["CuDNN"]))["CuDNN"]
    best = max(
        (i for i in images if i["CuDNN"] == cudnn),
        key=lambda i: (version_parts(i["CUDA"]), version_parts(i["Ubuntu"])),
    )
    return f"nvidia/cuda:{best['Tag']}"


def wheel_cuda(metadata: str) -> str:
    """The CUDA major.minor a torch wheel's Requires-Dist pins (cuda-toolkit or the runtime)."""
    found = re.search(
        r"^Requires-Dist: (?:cuda-toolkit\[[^]]*\]|nvidia-cuda-runtime(?:-cu\d+)?)==(\d+)\.(\d+)",
        metadata,
        re.MULTILINE,
    )
    assert found, "no CUDA runtime among the wheel's Requires-Dist"
    return f"{found[1]}.{found[2]}"


def build_problem(torch: str, cuda: str | None, wheel: str) -> str | None:
    """Why `cog build` (gpu: true) would refuse or mis-build this pair, or None.

    Cog's own refusals: an unknown torch without build.cuda, a CUDA below its minimum, a CUDA
    with no base image. Ours, stricter than Cog (which only warns once build.cuda is set): the
    line is major.minor, appears in Cog's torch table, and is the line of the pinned wheel.
    """
    if cuda is None:
        if not cudas_for_torch(torch):  # Cog
            return f"cog doesn't know what CUDA version is compatible with torch=={torch}"
        return None
    if not re.fullmatch(r"\d+\.\d+", cuda):  # ours
        return f"build.cuda {cuda!r} must be major.minor, as the torch wheel's line"
    if int(cuda.split(".")[0]) < MIN_CUDA_MAJOR:  # Cog
        return f"minimum supported CUDA version is {MIN_CUDA_MAJOR}"
    if cuda not in {row["CUDA"] for row in TORCH_TABLE}:  # ours
        return f"CUDA {cuda} is in no row of Cog's torch table"
    if base_image(cuda) is None:  # Cog
        return f"CUDA {cuda} is not supported by Cog (no base image)"
    if cuda != wheel:  # ours: Cog would build it on a CUDA that is not the one torch runs on
        return f"build.cuda {cuda} is not the line torch=={torch} is built for ({wheel})"
    return None


def torch_pin() -> str:
    pins = (REPO / "requirements.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in pins if line.startswith("torch=="))


@pytest.mark.parametrize(
    ("torch", "cuda", "wheel", "refused"),
    [
        ("2.11.0", None, "13.0", False),  # in the table: Cog picks the CUDA itself
        ("2.13.0", None, "13.0", True),  # newer than the table, no build.cuda
        ("2.13.0", "13.0", "13.0", False),
        ("2.13.0", "12.8", "13.0", True),  # a base image, but not the wheel's CUDA
        ("2.13.0", "13", "13.0", True),
        ("2.13.0", "10.2", "10.2", True),
        ("2.13.0", "13.3", "13.3", True),  # no such line in Cog's tables
    ],
)
def test_the_rule_as_cog_applies_it(
    torch: str, cuda: str | None, wheel: str, refused: bool
) -> None:
    assert (build_problem(torch, cuda, wheel) is not None) is refused


def test_cog_build_accepts_our_torch_pin_and_cuda() -> None:
    build = yaml.safe_load((REPO / "cog.yaml").read_text())["build"]
    assert build["gpu"] is True
    metadata = (DATA / "torch-2.13.0-linux-x86_64.metadata").read_text()
    # The recorded wheel is the pinned one: a torch bump needs its metadata (and CUDA) anew.
    assert re.search(rf"^Version: {re.escape(torch_pin())}$", metadata, re.MULTILINE)
    assert build_problem(torch_pin(), build.get("cuda"), wheel_cuda(metadata)) is None


def test_the_base_image_cog_picks_for_our_cuda() -> None:
    cuda = yaml.safe_load((REPO / "cog.yaml").read_text())["build"]["cuda"]
    image = base_image(cuda)
    assert image is not None
    assert re.fullmatch(rf"nvidia/cuda:{re.escape(cuda)}\.\d+-cudnn-devel-ubuntu24\.04", image)


# --- descriptions the static schema parser keeps --------------------------------------------


def cog_string_literal(segment: str) -> str | None:
    """parseStringLiteral: the text between the quotes, undecoded; None where it gives up."""
    for quote in ('"""', "'''"):
        if segment.startswith(quote):
            return segment[3:-3] if len(segment) >= 6 else None
    if segment[:1] in "\"'":
        return segment[1:-1] if len(segment) >= 2 else None
    if segment[:2] in ('r"', "r'"):
        return segment[2:-1] if len(segment) >= 3 else None
    return None


def dropped_because(node: ast.expr, source: str) -> str | None:
    """Why Cog's static parser would drop or garble this description, or None if it keeps it."""
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return f"not a string literal but {type(node).__name__}"
    segment = ast.get_source_segment(source, node) or ""
    tokens = tokenize.generate_tokens(io.StringIO(f"({segment})").readline)
    if sum(token.type == tokenize.STRING for token in tokens) != 1:
        return "adjacent literals (implicit concatenation)"
    if "\\" in segment:
        return "a backslash escape (the parser keeps it undecoded)"
    if cog_string_literal(segment) != node.value:
        return "a literal the parser reads differently (a string prefix?)"
    return None


def description_problems(source: str) -> list[str]:
    """Every `Input(description=...)` in `source` that `cog build` would not keep as written."""
    problems = []
    for call in ast.walk(ast.parse(source)):
        if not isinstance(call, ast.Call):
            continue
        name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
        for keyword in call.keywords if name == "Input" else ():
            if keyword.arg == "description" and (why := dropped_because(keyword.value, source)):
                problems.append(f"line {keyword.value.lineno}: {why}")
    return problems


@pytest.mark.parametrize(
    ("argument", "why"),
    [
        ('"Plain text, 1 to 1024: ok."', None),
        ("'single quotes'", None),
        ('"""triple quotes"""', None),
        ('r"raw, no escapes"', None),
        ('f"{MAX_TEXTS} texts"', "an f-string"),
        ('"adjacent " "literals"', "adjacent literals"),
        ('(\n    "split over "\n    "two lines"\n)', "adjacent literals"),
        ("DESCRIPTION", "not a string literal but Name"),
        ('"a" + "b"', "not a string literal but BinOp"),
        ('"tab\\there"', "a backslash escape"),
        ('"quote \\" inside"', "a backslash escape"),
        ('u"unicode prefix"', "reads differently"),
    ],
)
def test_the_check_sees_what_the_parser_drops(argument: str, why: str | None) -> None:
    problems = description_problems(f"x = Input(default=1, description={argument})\n")
    if why is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert why in problems[0]


def test_every_description_in_predict_py_survives_cogs_static_parser() -> None:
    assert description_problems((REPO / "predict.py").read_text()) == []


def run_input(name: str) -> ast.Call:
    """The `Input(...)` default of run()'s parameter `name`, from predict.py's syntax tree."""
    tree = ast.parse((REPO / "predict.py").read_text())
    run = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "run"
    )
    params = [a.arg for a in run.args.args]
    defaults = dict(zip(params[-len(run.args.defaults) :], run.args.defaults, strict=True))
    call = defaults[name]
    assert isinstance(call, ast.Call)
    return call


def test_the_texts_description_states_the_limits_the_code_enforces() -> None:
    described = next(k.value for k in run_input("texts").keywords if k.arg == "description")
    assert isinstance(described, ast.Constant), "not a plain literal"
    found = re.search(
        r"1 to (\d+) texts, (\d+) MiB of UTF-8 in all; each is truncated at (\d+) tokens",
        described.value,
    )
    assert found, described.value
    assert int(found[1]) == MAX_TEXTS
    assert int(found[2]) << 20 == MAX_TOTAL_BYTES
    assert int(found[3]) == MAX_TOKENS


# --- @concurrent ----------------------------------------------------------------------------


def run_method() -> ast.AsyncFunctionDef:
    tree = ast.parse((REPO / "predict.py").read_text())
    runner = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Runner")
    return next(f for f in runner.body if isinstance(f, ast.AsyncFunctionDef) and f.name == "run")


def test_concurrency_is_a_literal_cog_build_can_read() -> None:
    """annotations.go, decoratorCogConcurrentMax: one `max=` keyword whose value is an integer
    literal >= 1, on an async run() (parser.go refuses max > 1 on a sync one); anything else
    stops `cog build`. That literal becomes the image's ENV COG_MAX_CONCURRENCY."""
    decorators = [d for d in run_method().decorator_list if isinstance(d, ast.Call)]
    concurrent = [d for d in decorators if ast.unparse(d.func) in {"concurrent", "cog.concurrent"}]
    assert len(concurrent) == 1
    (call,) = concurrent
    assert call.args == []
    assert [k.arg for k in call.keywords] == ["max"]
    value = call.keywords[0].value
    assert isinstance(value, ast.Constant)
    assert type(value.value) is int  # not a bool, not a name
    assert value.value == MAX_CONCURRENCY
    assert MAX_CONCURRENCY > 1


def test_a_local_server_gets_the_images_slots() -> None:
    assert concurrency_max(REPO, "predict.py:Runner") == MAX_CONCURRENCY
    assert concurrency_max(REPO, "bench/one_slot_predict.py:Runner") == 1


@pytest.mark.parametrize(
    ("decorator", "slots"),
    [
        ("@concurrent", 1),
        ("@concurrent()", 1),
        ("@concurrent(max=8)", 8),
        ("@cog.concurrent(max=3)", 3),
        ("@concurrent(max=SLOTS)", None),
        ("@concurrent(max=True)", None),
        ("@concurrent(max=0)", None),
        ("@concurrent(8)", None),
        ("@concurrent(min=8)", None),
    ],
)
def test_the_local_server_reads_concurrency_as_cog_build_does(
    tmp_path: Path, decorator: str, slots: int | None
) -> None:
    """A literal `max` is the slot count; anything else stops `cog build`, and so the local
    server refuses to start with it, in one line, instead of running with one slot."""
    (tmp_path / "runner.py").write_text(
        "import cog\nfrom cog import BaseRunner, concurrent\n\n\n"
        f"class Runner(BaseRunner):\n    {decorator}\n    async def run(self) -> str:\n"
        '        return "x"\n'
    )
    if slots is None:
        with pytest.raises(CogServerError, match="integer literal"):
            concurrency_max(tmp_path, "runner.py:Runner")
    else:
        assert concurrency_max(tmp_path, "runner.py:Runner") == slots
