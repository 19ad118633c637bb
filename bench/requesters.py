"""Runs in the bench's load generator: the client a target needs (HTTP, JSON-RPC or signed cloud).

Closed-loop and open-loop jobs both build their requesters here.
"""

from __future__ import annotations

import aiohttp

from bench.cloud_direct import CloudRequester
from bench.direct import LingmaRequester
from bench.http_requester import HttpRequester
from bench.targets import ChunkMeter, HttpTarget, LingmaTarget, Requester, Target


def make_requester(target: Target, session: aiohttp.ClientSession, meter: ChunkMeter) -> Requester:
    if isinstance(target, HttpTarget):
        return HttpRequester(target, session, meter)
    if isinstance(target, LingmaTarget):
        return LingmaRequester(target, session, meter)
    return CloudRequester(target, session, meter)
