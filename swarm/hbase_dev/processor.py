"""Dispatch Thrift calls to a handler across several services, and report every error to the client.

thriftpy2's stock processor serves one service and drops the connection when
a handler raises an exception the call does not declare; here an error
always becomes an answer, so one bad call never costs a client its
connection.
"""
from __future__ import annotations

import logging
import types
from typing import Any, Callable

from thriftpy2.thrift import TApplicationException, TProcessor, TType

from swarm.hbase_dev.errors import HBaseError

log = logging.getLogger(__name__)


class MultiServiceProcessor(TProcessor):
    """Serves every method of ``services`` (first match wins) with ``handler``."""

    def __init__(self, handler: object, *services: types.ModuleType):
        super().__init__(services[0], handler)
        self._services = services

    def process_in(self, iprot: Any) -> tuple[str, int, Any, Callable[[], Any] | None]:
        api, _, seqid = iprot.read_message_begin()
        service = next((s for s in self._services if api in s.thrift_services), None)
        if service is None:
            iprot.skip(TType.STRUCT)
            iprot.read_message_end()
            error = TApplicationException(TApplicationException.UNKNOWN_METHOD, f"Invalid method name: '{api}'")
            return api, seqid, error, None
        args = getattr(service, api + "_args")()
        args.read(iprot)
        iprot.read_message_end()
        result = getattr(service, api + "_result")()
        names = [spec[1] for spec in args.thrift_spec.values()]

        def call() -> Any:
            return getattr(self._handler, api)(*(getattr(args, n) for n in names))

        return api, seqid, result, call

    def process(self, iprot: Any, oprot: Any) -> None:
        api, seqid, result, call = self.process_in(iprot)
        if isinstance(result, TApplicationException):
            return self.send_exception(oprot, api, result, seqid)
        assert call is not None
        try:
            result.success = call()
        except Exception as exc:  # every error is answered, the connection stays up
            declared = _declared(result, exc)
            if declared is None:
                log.exception("%s failed", api)
                error = TApplicationException(TApplicationException.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
                return self.send_exception(oprot, api, error, seqid)
            setattr(result, *declared)
        if not result.oneway:
            self.send_result(oprot, api, result, seqid)


def _declared(result: Any, exc: Exception) -> tuple[str, Any] | None:
    """The result field and Thrift exception that report ``exc``, if the call declares one.

    An ``HBaseError`` goes out as its own kind when declared, anything else as
    ``IOError`` (HBase's Thrift server reports every failure that way).
    """
    declared = {spec[2].__name__: (spec[1], spec[2]) for spec in result.thrift_spec.values() if spec[1] != "success"}
    if isinstance(exc, HBaseError):
        kind, message = exc.kind, str(exc)
    else:
        log.warning("unexpected error reported as IOError", exc_info=exc)
        kind, message = "IOError", f"{type(exc).__name__}: {exc}"
    for name in (kind, "IOError"):
        if name in declared:
            field, exc_cls = declared[name]
            return field, exc_cls(message=message)
    return None
