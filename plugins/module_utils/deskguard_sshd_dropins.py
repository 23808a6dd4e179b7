# -*- coding: utf-8 -*-
"""Foreign sshd drop-ins that would beat the kit's (ACC-005), found and neutralised.

sshd keeps the first value it reads for a keyword and reads its drop-in folder in name order, so a keyword the
kit's drop-in sets, in another drop-in that sorts before it (`00-break.conf` before `00-deskguard-…`), wins; in
a Match block it wins for the connections it matches, wherever its file sorts. Such lines are commented out
(never the whole file: its other settings are someone's), after a copy of the file is kept aside.
"""

from __future__ import annotations

import os
import re
import shutil
import time

MARK = "# deskguard ACC-005 neutralised (the kit's drop-in sets this): "


def _keyword(line):
    """sshd_config's keyword of a line (lower case), '' for a comment or a blank line; `Key=value` too."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return ""
    return re.split(r"[\s=]", stripped, maxsplit=1)[0].lower()


def overrides(dropin, content):
    """[{path, lines, content}] for each other drop-in of `dropin`'s folder whose lines would beat a keyword the
    kit's drop-in (`content`) sets: `lines` are those settings, `content` the file with them commented out."""
    managed = {_keyword(line) for line in content.splitlines()} - {""}
    folder, mine = os.path.split(dropin)
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name == mine or not name.endswith(".conf") or not os.path.isfile(path):
            continue
        with open(path) as fh:
            text = fh.read()
        first, in_match, hits, out = name < mine, False, [], []
        for line in text.splitlines(True):
            key = _keyword(line)
            in_match = in_match or key == "match"
            if key in managed and (first or in_match):
                hits.append(line.strip())
                out.append(MARK + line.lstrip())
            else:
                out.append(line)
        if hits:
            found.append({"path": path, "lines": hits, "content": "".join(out)})
    return found


def neutralise(found, backup_dir):
    """Write each file of `overrides` without its offending lines (same mode and owner, atomically), after a
    copy of the original is kept in `backup_dir`. Returns [{path, lines, backup}]."""
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    done = []
    for item in found:
        path = item["path"]
        backup = os.path.join(backup_dir, "%s-%s" % (stamp, os.path.basename(path)))
        shutil.copy2(path, backup)
        st = os.stat(path)
        tmp = os.path.join(os.path.dirname(path), ".deskguard-%s" % os.path.basename(path))
        with open(tmp, "w") as fh:
            fh.write(item["content"])
        os.chmod(tmp, st.st_mode & 0o7777)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
        done.append({"path": path, "lines": item["lines"], "backup": backup})
    return done
