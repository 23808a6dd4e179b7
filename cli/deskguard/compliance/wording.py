"""How an observed value reads inside a plain-language finding: a missing value is "not set", never Python's
`None`; an empty one says so; a unit follows only a number."""

from __future__ import annotations


def shown(value, unit: str = "") -> str:
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return repr(value) if value else "empty"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(shown(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={shown(v)}" for k, v in value.items()) if value else "none"
    return f"{value:g}{unit and ' ' + unit}" if isinstance(value, float) else f"{value}{unit and ' ' + unit}"
