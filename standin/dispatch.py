"""The stand-in's dispatcher: queued predictions run on the Cog server, one at a time.

Cog reports each prediction through its own webhooks (its smaller shape: id, status, output,
logs, error, metrics); the dispatcher turns them into Replicate's full prediction object and the
events Replicate would send: start, output, logs, completed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ship.api import TERMINAL
from standin.memory import StandIn, seconds_between
from standin.webhooks import EVENTS, WebhookSender

# Replicate's error for a prediction its infrastructure lost (a preempted or failed node).
INTERRUPTED = "Prediction interrupted; please retry (code: PA)"


class Dispatcher:
    """Runs queued predictions on the Cog server, one at a time, and applies Cog's events."""

    def __init__(self, standin: StandIn, sender: WebhookSender) -> None:
        self.standin = standin
        self.sender = sender
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.done: dict[str, asyncio.Event] = {}
        self.accepted: set[str] = set()  # predictions the model took: they have started
        self.http = httpx.AsyncClient(timeout=30)

    async def run(self) -> None:
        while True:
            prediction_id = await self.queue.get()
            prediction = self.standin.predictions[prediction_id]
            if prediction["status"] != "starting":  # canceled while queued
                continue
            done = self.done[prediction_id] = asyncio.Event()
            await self._start(prediction)
            try:
                await asyncio.wait_for(done.wait(), self.standin.deadline_seconds)
            except TimeoutError:  # Cog went silent: end it as Replicate does at the deadline
                self.apply(prediction_id, {"status": "canceled", "error": "deadline reached"})
            del self.done[prediction_id]
            self.accepted.discard(prediction_id)

    async def _start(self, prediction: dict[str, Any]) -> None:
        pid = prediction["id"]
        interrupt = self.standin.interrupt
        if interrupt is not None and interrupt(prediction):
            self.apply(pid, {"status": "failed", "error": INTERRUPTED})
            return
        request = {
            "id": pid,
            "input": prediction["input"],
            "webhook": f"{self.standin.base_url}/_cog/{pid}",
            "webhook_events_filter": list(EVENTS),
        }
        try:
            response = await self.http.post(
                f"{self.standin.cog_url}/predictions",
                json=request,
                headers={"Prefer": "respond-async"},
            )
        except httpx.HTTPError as exc:
            self.apply(pid, {"status": "failed", "error": f"model unreachable: {exc!r}"})
            return
        if response.status_code >= 400:
            self.apply(pid, {"status": "failed", "error": f"model refused: {response.text}"})
        else:
            self.accepted.add(pid)

    def from_cog(self, prediction_id: str, update: dict[str, Any]) -> None:
        """A webhook from Cog; terminal ones wait while the stand-in holds completions."""
        if update.get("status") in TERMINAL and self.standin.hold_completions:
            self.standin.held.append((prediction_id, update))
        else:
            self.apply(prediction_id, update)

    def apply(self, prediction_id: str, update: dict[str, Any]) -> None:
        """Apply one state (in the shape of Cog's webhooks) and notify subscribers."""
        prediction = self.standin.predictions.get(prediction_id)
        if prediction is None or prediction["status"] in TERMINAL:
            return
        status = update.get("status", prediction["status"])
        if status in TERMINAL and "started_at" not in prediction and prediction_id in self.accepted:
            # Cog sends its webhooks concurrently: its `processing` may come after its terminal
            # one, or not at all. The model did start, and Replicate says so first, with the
            # state the prediction started in (its `start` webhook must not read `failed`).
            self.apply(prediction_id, {"status": "processing"})
        before = dict(prediction)
        prediction["status"] = status
        for key in ("output", "error"):
            if key in update:
                prediction[key] = update[key]
        prediction["logs"] = update.get("logs") or prediction["logs"]
        if "predict_time" in (update.get("metrics") or {}):
            prediction["metrics"] = {"predict_time": update["metrics"]["predict_time"]}
        events = []
        if status == "processing" and "started_at" not in prediction:
            prediction["started_at"] = self.standin.now_iso()
            events.append("start")
        if prediction["output"] != before["output"] and status not in TERMINAL:
            events.append("output")
        if prediction["logs"] != before["logs"] and status not in TERMINAL:
            events.append("logs")
        if status in TERMINAL:
            prediction["completed_at"] = self.standin.now_iso()
            prediction.setdefault("started_at", prediction["completed_at"])
            total = seconds_between(prediction["created_at"], prediction["completed_at"])
            prediction["metrics"] = {**prediction.get("metrics", {}), "total_time": total}
            events.append("completed")
            if prediction_id in self.done:
                self.done[prediction_id].set()
        for event in events:
            self.sender.notify(prediction_id, event)
        self.standin.touched()

    def release(self) -> None:
        self.standin.hold_completions = False
        held = self.standin.held
        self.standin.held = []
        for prediction_id, update in held:
            self.apply(prediction_id, update)

    async def cancel(self, prediction_id: str) -> None:
        prediction = self.standin.predictions[prediction_id]
        if prediction["status"] == "starting":
            self.apply(prediction_id, {"status": "canceled"})
        elif prediction["status"] == "processing":
            # Cog answers with a `canceled` webhook, applied like any other.
            await self.http.post(f"{self.standin.cog_url}/predictions/{prediction_id}/cancel")

    async def close(self) -> None:
        await self.http.aclose()
