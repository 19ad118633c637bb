"""Runs in the worker: the cloud backend — Lingma's cloud chat API, the runtime's login (§14)."""
