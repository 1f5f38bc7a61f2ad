"""Assemble a receiver from its settings: the store, migrated, and its background workers."""

from __future__ import annotations

from functools import partial

from receiver import replicate_api
from receiver.db import make_engine, migrate
from receiver.download_process import configuration
from receiver.reconcile import Reconciler
from receiver.settings import Settings
from receiver.store import Store
from receiver.workers import ChildWorker, Periodic, Worker
from receiver.yielding import Arrivals


def open_store(settings: Settings) -> Store:
    """The store named by RECEIVER_DATABASE_URL, migrated to the current schema."""
    wait = settings.receiver_store_timeout_seconds
    engine = make_engine(settings.receiver_database_url, wait)
    migrate(engine)
    return Store(
        engine,
        settings.receiver_download_hosts,
        settings.receiver_database_url,
        wait,
        settings.receiver_max_files_per_prediction,
    )


def background_workers(
    store: Store, settings: Settings, arrivals: Arrivals | None = None
) -> list[Worker]:
    """The download worker (a process of its own, told how many webhooks arrive when
    `arrivals` counts them), and the reconciler when there is an API token to reconcile with."""
    pulse = arrivals.pulse if arrivals is not None else None
    config = configuration(settings)
    downloads = ChildWorker("downloads", "receiver.download_process", config, pulse)
    workers: list[Worker] = [downloads]
    if settings.replicate_api_token is not None:
        reconciler = Reconciler(store, settings, partial(replicate_api.prediction, settings))
        interval = settings.receiver_reconcile_interval_seconds
        workers.append(Periodic("reconcile", reconciler.step, interval))
    return workers
