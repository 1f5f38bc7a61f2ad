"""Predictions whose terminal webhook never came are fetched from the API and collected."""

from __future__ import annotations

from functools import partial

import pytest

from receiver import replicate_api
from receiver.reconcile import Reconciler
from receiver.settings import Settings
from tests.support.live import LiveReceiver, LiveStandIn
from tests.support.loopback_http import FileServer
from tests.support.receiving import prediction
from tests.support.standin import STANDIN_TOKEN


@pytest.fixture
def reconciler(
    receiver: LiveReceiver, receiver_settings: Settings, standin: LiveStandIn
) -> Reconciler:
    store = receiver.store
    clock = receiver.clock
    settings = Settings.model_validate(
        {
            **receiver_settings.model_dump(),
            "replicate_api_token": STANDIN_TOKEN,
            "replicate_base_url": standin.url,
            "receiver_reconcile_after_seconds": 60.0,
        }
    )
    return Reconciler(store, settings, partial(replicate_api.prediction, settings), clock)


def test_a_missed_terminal_webhook_is_collected(
    receiver: LiveReceiver, reconciler: Reconciler, standin: LiveStandIn
) -> None:
    store = receiver.store
    clock = receiver.clock
    store.record("msg_start", prediction("r1", "processing"), clock())
    standin.memory.put("r1", "succeeded", output=["https://replicate.delivery/r1/out.npy"])
    reconciler.step()
    assert store.prediction("r1")["status"] == "processing"  # not quiet for long enough yet
    clock.now += 61
    reconciler.step()
    state = store.prediction("r1")
    assert state["status"] == "succeeded"
    assert [(d["status"], d["source"]) for d in state["deliveries"]] == [
        ("processing", "webhook"),
        ("succeeded", "reconcile"),
    ]
    assert [f["state"] for f in state["files"]] == ["queued"]


def test_aborted_is_collected_although_the_client_cannot_parse_it(
    receiver: LiveReceiver, reconciler: Reconciler, standin: LiveStandIn
) -> None:
    store = receiver.store
    clock = receiver.clock
    store.record("msg_start", prediction("r2", "starting"), clock())
    standin.memory.put("r2", "aborted")
    clock.now += 61
    reconciler.step()
    assert store.prediction("r2")["status"] == "aborted"


def test_unknown_or_failing_lookups_do_not_stop_the_others(
    receiver: LiveReceiver, reconciler: Reconciler, standin: LiveStandIn
) -> None:
    store = receiver.store
    clock = receiver.clock
    store.record("m1", prediction("gone", "processing"), clock())
    store.record("m2", prediction("r3", "processing"), clock())
    standin.memory.put("r3", "failed", error="boom")
    clock.now += 61
    reconciler.step()
    assert store.prediction("gone")["status"] == "processing"  # 404 from the API
    assert store.prediction("r3")["status"] == "failed"
    assert store.stale(clock.now - 60, 0, 10) == []  # each tried once this interval


def test_terminal_and_expired_predictions_are_left_alone(
    receiver: LiveReceiver, reconciler: Reconciler, standin: LiveStandIn
) -> None:
    store = receiver.store
    clock = receiver.clock
    store.record("m1", prediction("done", "succeeded"), clock())
    store.record("m2", prediction("old", "processing"), clock())
    standin.memory.put("done", "failed")
    standin.memory.put("old", "succeeded")
    clock.now += 3 * 3600  # past Replicate's hour: it deleted both long ago
    reconciler.step()
    assert store.prediction("old")["status"] == "processing"  # not fetched
    assert [d["source"] for d in store.prediction("done")["deliveries"]] == ["webhook"]


@pytest.mark.parametrize("prediction_id", ["../../v1/account", "..", "a/b", "a?b=c", "a%2Fb"])
def test_an_id_that_is_not_replicates_never_reaches_another_api_path(
    receiver: LiveReceiver, receiver_settings: Settings, prediction_id: str
) -> None:
    """Ids come from whoever signed the delivery; the API token must not follow them elsewhere."""
    api = FileServer()
    try:
        settings = Settings.model_validate(
            {
                **receiver_settings.model_dump(),
                "replicate_api_token": STANDIN_TOKEN,
                "replicate_base_url": api.origin,
                "receiver_reconcile_after_seconds": 60.0,
            }
        )
        fetch = partial(replicate_api.prediction, settings)
        reconciler = Reconciler(receiver.store, settings, fetch, receiver.clock)
        receiver.store.record("m1", prediction(prediction_id, "processing"), receiver.clock())
        receiver.clock.now += 61
        reconciler.step()
    finally:
        api.close()
    assert list(api.hits) == []  # not fetched at all: no Replicate id looks like this
    assert receiver.store.prediction(prediction_id)["status"] == "processing"
    assert receiver.store.stale(receiver.clock.now - 60, 0, 10) == []  # and not asked again
