"""Observability built on the event log: reports, timelines, traces and route-tagged logging.

Submodules load their heavy dependencies (rich, matplotlib, opentelemetry) only when used.
"""
