"""OpenTelemetry spans of waits and holds, when the application uses OpenTelemetry.

pggcl never imports OpenTelemetry. When the application has loaded it (``opentelemetry.trace``
is imported) and set a tracer provider, ``concurrency()`` and ``rate_limit()`` of both clients
make spans with the tracer ``pggcl``:

- ``pggcl.acquire``: the call, from its start until the slots are granted or it gives up.
- ``pggcl.hold`` (``concurrency()`` only): from the grant until the release, current while the
  block's body runs, so the body's own spans are its children.

Attributes: ``pggcl.limits`` (the names, a list), ``pggcl.occupy``, ``pggcl.mode``
(``concurrency`` or ``rate_limit``), ``pggcl.outcome``, and ``pggcl.wait_seconds`` (acquire) or
``pggcl.hold_seconds`` and ``pggcl.lease_id`` (hold). Outcomes of an acquire: ``granted``,
``timeout`` (AcquireConcurrencySlotTimeoutError), ``refused`` (ConcurrencySlotAcquisitionError),
``cancelled`` (task cancelled, KeyboardInterrupt), ``error``; of a hold: ``released``, ``lost``
(the lease was gone, reclaimed, when released or renewed), ``error`` (the body raised; the
exception is recorded on the span). Without OpenTelemetry loaded, or without a provider set,
there is nothing to make: each call costs a dictionary lookup.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from pggcl.errors import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    SessionLostError,
)

__all__ = ["acquire_span", "hold_span"]

_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
# The tracer of the provider last seen (a provider is set once, but tests set others).
_cached: tuple[Any, Any] | None = None


def _tracer() -> Any | None:
    global _cached
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None  # nothing set: every span would be dropped
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("pggcl"))
    return _cached[1]


def acquire_span(names: tuple[str, ...], occupy: int, mode: str) -> Any:
    """A context manager around an acquire, yielding the span (or None, not traced)."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return _span(tracer, "pggcl.acquire", "wait", names, occupy, mode, None)


def hold_span(names: tuple[str, ...], occupy: int, lease_id: object) -> Any:
    """A context manager around a held block, current while it runs; yields the span or None."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return _span(tracer, "pggcl.hold", "hold", names, occupy, "concurrency", str(lease_id))


def outcome(span: Any, what: str) -> None:
    """Set the span's outcome (``span`` None: not traced)."""
    if span is not None:
        span.set_attribute("pggcl.outcome", what)


def _failure(phase: str, exc: BaseException) -> str:
    if isinstance(exc, AcquireConcurrencySlotTimeoutError):
        return "timeout"
    if isinstance(exc, SessionLostError):
        return "lost"
    if isinstance(exc, ConcurrencySlotAcquisitionError):
        return "refused"
    if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt
        return "cancelled"
    return "error"


@contextlib.contextmanager
def _span(
    tracer: Any,
    name: str,
    phase: str,
    names: tuple[str, ...],
    occupy: int,
    mode: str,
    lease_id: str | None,
) -> Iterator[Any]:
    attributes: dict[str, Any] = {
        "pggcl.limits": list(names),
        "pggcl.occupy": occupy,
        "pggcl.mode": mode,
    }
    if lease_id is not None:
        attributes["pggcl.lease_id"] = lease_id
    started = time.monotonic()
    with tracer.start_as_current_span(name, attributes=attributes) as span:
        try:
            yield span
        except BaseException as exc:
            span.set_attribute("pggcl.outcome", _failure(phase, exc))
            raise
        finally:
            span.set_attribute(f"pggcl.{phase}_seconds", time.monotonic() - started)
