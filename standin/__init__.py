"""The offline stand-in for Replicate, and the whole loop on one machine.

`app` serves the part of Replicate's API the ship path uses (routers in `api_*`, over what
`memory` knows), `dispatch` runs queued predictions on the local Cog server, `webhooks` sends
webhooks as Replicate does; `local` starts the stand-in, Cog and the receiver together, for
`make demo` (`demo`), `make stack` (`stack`) and the tests."""
