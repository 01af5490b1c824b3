"""Prefect integration: who holds a lease, in Prefect's terms.

pggcl never imports Prefect. Inside a Prefect flow or task run Prefect is already imported,
so its run context is read from ``sys.modules`` (no import, no cost when Prefect is absent):

- :func:`run_holder`: the current task run (else flow run) as ``"task_run:<id>"``
  (``"flow_run:<id>"``), the default holder of ``concurrency()`` inside Prefect, as Prefect
  itself does, so that ``pggcl holders`` names the run that holds the slots;
- :func:`holder_text`: a ``holder`` argument as stored: a string as given, Prefect's holder
  (a dict ``{"type": "task_run", "id": UUID}``, or its ``ConcurrencyLeaseHolder`` model) as
  ``type:id``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pggcl.errors import ValidationError

__all__ = ["holder_text", "run_holder"]


def run_holder() -> str | None:
    """The Prefect run this code runs in, as ``task_run:<id>`` or ``flow_run:<id>``; None
    outside a run, or when Prefect is not loaded."""
    context: Any = sys.modules.get("prefect.context")
    if context is None:
        return None
    try:
        task_run_context = context.TaskRunContext.get()
        if task_run_context is not None and task_run_context.task_run is not None:
            return f"task_run:{task_run_context.task_run.id}"
        flow_run_context = context.FlowRunContext.get()
        if flow_run_context is not None and flow_run_context.flow_run is not None:
            return f"flow_run:{flow_run_context.flow_run.id}"
    except Exception:  # a Prefect whose context differs: no holder, never an error
        return None
    return None


def holder_text(holder: object) -> str | None:
    """``holder`` as the text stored with a lease: a string as it is; Prefect's holder, a
    mapping or an object with ``type`` and ``id``, as ``type:id``; None stays None."""
    if holder is None or isinstance(holder, str):
        return holder
    if isinstance(holder, Mapping):
        kind, ident = holder.get("type"), holder.get("id")
    else:
        kind, ident = getattr(holder, "type", None), getattr(holder, "id", None)
    if kind is None or ident is None:
        raise ValidationError(
            f"invalid holder: {holder!r}; give a string, or Prefect's "
            '{"type": "flow_run" | "task_run" | "deployment", "id": UUID}',
            field="holder",
        )
    return f"{getattr(kind, 'value', kind)}:{ident}"
