"""Corpus jobs: a dataset embedded through a Replicate deployment, collected by the receiver.

A job is uploaded once (`POST /jobs`, JSONL), cut into chunks of texts, and stored; the job
runner in each receiver process turns chunks into predictions (`output_format=npy`, a webhook to
this receiver), no faster than Replicate allows, follows each to its downloaded file, and runs a
chunk again when its prediction or file is lost. Results are read back chunk by chunk, in input
order. Modules: `items` (the input and how it is cut), `store` (the tables), `rate` (the shared
creation limit), `runner` (the loop), `routes` (the HTTP API), `cli` (`python -m receiver jobs`).
"""
