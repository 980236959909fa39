"""Log correlation (observability §7): stdlib log records written inside a node step.

:class:`RunLogHandler` is a :class:`logging.Handler`; attach it to the loggers whose
records should be correlated (the root logger for all of them). A record written
inside an observed node step becomes a :class:`~openarmature_nodes.events.LogRecordEvent`
on the invocation's observer queue, stamped with the step's lineage. Because it is
delivered in order with the node events, the
:class:`~openarmature_nodes.observability.otel.OTelObserver` (given ``log_processors``)
emits it to its OpenTelemetry Logs provider under the span of the step that was
running when the record was written: its ``trace_id`` / ``span_id`` (a detached
unit's own trace), plus ``openarmature.correlation_id`` and the caller metadata
``openarmature.user.*``. Records written outside any observed run are ignored here
(other handlers still see them).

Example::

    handler = RunLogHandler()
    logging.getLogger().addHandler(handler)
    graph.attach(OTelObserver(span_processors=[...], log_processors=[...]))
"""

from __future__ import annotations

import logging

from openarmature_nodes.context import current_lineage, emit_framework_event, run_scope
from openarmature_nodes.events import LogRecordEvent

__all__ = ["RunLogHandler"]


class RunLogHandler(logging.Handler):
    """Queue each record written inside an observed node step as a ``LogRecordEvent``."""

    def emit(self, record: logging.LogRecord) -> None:
        lineage = current_lineage()
        if lineage is None or lineage.invocation_id is None:
            return
        try:
            body = record.getMessage()
        except Exception:  # a malformed format call: report it like logging does
            self.handleError(record)
            return
        emit_framework_event(LogRecordEvent(
            invocation_id=lineage.invocation_id,
            namespace=lineage.namespace,
            attempt_index=lineage.attempt_index,
            fan_out_index=lineage.fan_out_index,
            branch_name=lineage.branch_name,
            fan_out_index_chain=lineage.fan_out_index_chain,
            branch_name_chain=lineage.branch_name_chain,
            subgraph_name_chain=lineage.subgraph_name_chain,
            correlation_id=getattr(run_scope.get(), "correlation_id", None),
            body=body,
            severity_text=record.levelname,
            severity_number=record.levelno,
            logger_name=record.name,
            time_ns=int(record.created * 1_000_000_000),
        ))
