"""Inspector on the line: PLC links (Modbus TCP; OPC UA) and ``inspector line`` (the PLC
simulator and the line's QA query). The handshake itself is the host's
(``inspector_core/runtime/line.py``); see ``docs/line.md``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inspector_core import hookimpl
from inspector_core.contract import PlcLink
from inspector_line.modbus import ModbusLink


def _links() -> list[type[PlcLink]]:
    links: list[type[PlcLink]] = [ModbusLink]
    try:  # the OPC UA link (helper UA's module) needs asyncua, an optional extra
        from inspector_line.opcua import OpcUaLink  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name not in ("inspector_line.opcua", "asyncua"):
            raise
    else:
        links.append(OpcUaLink)
    return links


@hookimpl
def inspector_register_plc_links(register: Callable[[type[PlcLink]], None]) -> None:
    for link in _links():
        register(link)


@hookimpl
def inspector_register_commands(register: Callable[[Any], None]) -> None:
    from inspector_line.cli import line

    register(line)
