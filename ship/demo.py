"""`make demo`: serve the model locally under Cog and make one prediction.

Prints a short summary a person can check by eye: the vectors' shape and the
cosine of a similar pair against a dissimilar one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

from ship.cog_server import CogServerError, cog_server

TEXTS = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The quarterly tax filing is due on Monday.",
]


def summarize(prediction: dict[str, object]) -> str:
    vectors = np.asarray(prediction["output"], dtype=np.float32)
    similar, dissimilar = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    metrics = prediction.get("metrics") or {}
    predict_time = metrics.get("predict_time", float("nan")) if isinstance(metrics, dict) else 0
    return (
        f"prediction {prediction['id']}: {prediction['status']} in {predict_time:.3f} s, "
        f"{vectors.shape[0]} vectors of {vectors.shape[1]} floats\n"
        f"  cosine(similar pair)    = {similar:.3f}  ({TEXTS[0]!r} ~ {TEXTS[1]!r})\n"
        f"  cosine(dissimilar pair) = {dissimilar:.3f}  ({TEXTS[0]!r} ~ {TEXTS[2]!r})"
    )


def main() -> int:
    log = Path(tempfile.mkdtemp(prefix="cog-demo-")) / "cog-server.log"
    print(f"demo: starting the Cog server (log: {log})")
    try:
        with cog_server(log) as server:
            response = httpx.post(
                f"{server.url}/predictions", json={"input": {"texts": TEXTS}}, timeout=120
            )
            prediction = response.json()
    except (CogServerError, httpx.HTTPError) as exc:
        print(f"demo: failed: {exc}", file=sys.stderr)
        return 1
    if prediction.get("status") != "succeeded":
        print(
            f"demo: prediction {prediction.get('status')}: {prediction.get('error')}",
            file=sys.stderr,
        )
        return 1
    print(summarize(prediction))
    return 0


if __name__ == "__main__":
    sys.exit(main())
