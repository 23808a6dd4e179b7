"""PowerShell syntax problems found by tree-sitter-pwsh (no PowerShell runs here).

A syntax check only: it does not know cmdlets, parameters, types or semantics. tree-sitter is error-tolerant,
so a few structural rules the real parser enforces are checked on the tree as well (a `try` needs a `catch`
or `finally`).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _parser():
    import tree_sitter_pwsh
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_pwsh.language()))


def problems(source: str) -> list[str]:
    """One line per problem, `line:col: what`, 1-based; empty when the script parses cleanly."""
    tree = _parser().parse(source.encode("utf-8"))
    found: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        where = f"{node.start_point.row + 1}:{node.start_point.column + 1}"
        if node.type == "ERROR":
            found.append(f"{where}: syntax error near {_excerpt(node)}")
        elif node.is_missing:
            found.append(f"{where}: missing {node.type!r}")
        elif node.type == "try_statement" and not any(
                c.type in ("catch_clauses", "catch_clause", "finally_clause") for c in node.children):
            found.append(f"{where}: try without catch or finally")
        stack.extend(reversed(node.children))
    return sorted(found, key=lambda p: tuple(int(x) for x in p.split(":")[:2]))


def _excerpt(node) -> str:
    text = node.text.decode("utf-8", "replace").strip().splitlines()
    return repr(text[0][:60] if text else "")
