"""Assemble a receiver from its settings: the store, migrated, and its background workers."""

from __future__ import annotations

from functools import partial

from receiver import replicate_api
from receiver.db import make_engine, migrate
from receiver.download_process import configuration
from receiver.jobs.rate import SharedRateLimit
from receiver.jobs.runner import JobRunner
from receiver.reconcile import Reconciler
from receiver.routes import WEBHOOK_PATH
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
    `arrivals` counts them); with an API token, the reconciler; with an API token and
    RECEIVER_PUBLIC_URL, the job runner."""
    pulse = arrivals.pulse if arrivals is not None else None
    config = configuration(settings)
    downloads = ChildWorker("downloads", "receiver.download_process", config, pulse)
    workers: list[Worker] = [downloads]
    if settings.replicate_api_token is not None:
        reconciler = Reconciler(store, settings, partial(replicate_api.prediction, settings))
        interval = settings.receiver_reconcile_interval_seconds
        workers.append(Periodic("reconcile", reconciler.step, interval))
    if settings.replicate_api_token is not None and settings.receiver_public_url is not None:
        workers.append(
            Periodic("jobs", job_runner(store, settings).step, settings.receiver_job_poll_seconds)
        )
    return workers


def job_runner(store: Store, settings: Settings) -> JobRunner:
    assert settings.receiver_public_url is not None
    return JobRunner(
        store,
        replicate_api.Replicate(settings),
        webhook_url=settings.receiver_public_url + WEBHOOK_PATH,
        limit=SharedRateLimit(
            store.engine, "predictions.create", settings.receiver_job_rate_per_minute
        ),
        max_attempts=settings.receiver_job_max_attempts,
        claim_seconds=settings.receiver_job_claim_seconds,
        max_in_flight=settings.receiver_job_max_in_flight,
    )
