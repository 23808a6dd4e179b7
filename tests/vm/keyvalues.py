"""What lab VM test scripts print as `key=value` lines, read back as a dict (the first value of a key wins)."""

from __future__ import annotations


def key_values(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), v.strip())
    return out
