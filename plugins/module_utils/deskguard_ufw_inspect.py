# -*- coding: utf-8 -*-
"""ufw read without changing anything: whether it is active, its default policies and the rules it holds.

The reading half of deskguard_ufw (which converges the firewall, arms the rollback timer and imports
everything here), in a file of its own so the nightly posture collector never carries the changing half.
"""

from __future__ import annotations

import re
import subprocess


class UfwError(Exception):
    pass


def rule_args(rule):
    """A rule dict -> the argument list after `ufw` (also how `ufw show added` prints it back)."""
    args = ["allow"]
    if rule.get("direction", "in") == "out":
        args.append("out")
    args += ["from", rule.get("src") or "any", "to", "any"]
    if rule.get("port"):
        args += ["port", str(rule["port"])]
    if rule.get("proto"):
        args += ["proto", rule["proto"]]
    if rule.get("comment"):
        args += ["comment", rule["comment"]]
    return args


def _canonical(args):
    return " ".join(a if " " not in a and a else "'%s'" % a for a in args)


def _run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise UfwError("%s failed (rc %d): %s" % (" ".join(argv), proc.returncode, out.strip()[-500:]))
    return out


def added_rules():
    """Rules ufw holds (active or not), as canonical strings."""
    out = _run(["ufw", "show", "added"])
    rules = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("ufw "):
            rules.append(line[4:])
    return rules


def read_defaults(path="/etc/default/ufw"):
    values = {}
    with open(path) as fh:
        for line in fh:
            m = re.match(r'^(DEFAULT_(INPUT|OUTPUT)_POLICY)="?(\w+)"?', line.strip())
            if m:
                values[m.group(2).lower()] = m.group(3).upper()
    return values


def is_enabled():
    return "Status: active" in _run(["ufw", "status"])
