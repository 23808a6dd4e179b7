"""Which lab this is, and every machine-wide name and range that follows from it.

Bridges, network namespaces, interface names, cgroups, loopback ports and the 10.x address space are
machine-wide; a lab's run folder (`DESKGUARD_LAB_RUN`, paths.runtime_dir) is its own. So each lab gets a
small index k, and every machine-wide thing it makes carries it:

  k = 0   the default run folder (/var/tmp/deskguard-lab): the names a single lab always had
          (bridge dglab0, 10.213.0.0/16, namespaces lab-f001.., veths dg-f001.. and vb-lab-ct1.., VM ports 2221..)
  k = 1..MAX_INDEX   any other run folder. The first choice is a hash of the folder's path (the same folder asks
          for the same index), claimed in a machine-wide registry so that two labs never share one, and
          remembered in the folder's `lab-index` file for the lab's life. A full `lab down` gives it back.

The registry is REGISTRY/index-<k>, a symlink to the run folder that holds the claim, made atomically under
a lock. It lives in /run, which is emptied at boot like the bridges and namespaces it guards. A claim whose
folder is gone, or no longer names that index, is stale and may be taken over.

Names for lab k (tag = "" for k = 0, else str(k)); all interface names stay within 15 characters:
  bridge            dglab<k>                       (dglab0 .. dglab42)
  address range     10.(213 + k).0.0/16            (10.213 .. 10.255)
  fleet namespace   lab<tag>-fNNN                  (lab-f001, lab7-f001)
  fleet veth        dg<tag>-fNNN                   (dg-f001, dg42-f1000: 10)
  container machine lab<tag>-ctN, veth vb-<machine> (vb-lab-ct1, vb-lab42-ct50: 13)
  VM ports          2220 + 1000 k + offset         (2221.., 3221..; DESKGUARD_LAB_PORT_BASE overrides)
The hosts' own names (lab-vm1, lab-ct1, lab-f001: inventory names and hostnames) are the same in every lab:
they live in the lab's own inventory and state, never machine-wide.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import LabError
from .paths import DEFAULT_RUNTIME_DIR, runtime_dir

MAX_INDEX = 42          # 10.(213 + 42) = 10.255: the last /16 of the lab's plan
FIRST_OCTET_2 = 213     # the default lab's second octet (10.213.0.0/16)
PORT_BASE = 2220        # the default lab's VM port base; each other lab gets its own block of PORT_STRIDE
PORT_STRIDE = 1000
REGISTRY = Path("/run/deskguard-lab")
INDEX_FILE = "lab-index"
IFNAMSIZ = 15           # the kernel's limit on an interface name (16 with the terminating NUL)


def is_default(run: Path) -> bool:
    return os.path.abspath(run) == os.path.abspath(DEFAULT_RUNTIME_DIR)


def run_tag(run: Path | None = None) -> str:
    """"" for the default run folder, else 8 hex digits of a hash of its path: for names that are not
    machine-wide and have no length limit (the lab's inventory folder in a site), known without claiming."""
    run = run or runtime_dir()
    return "" if is_default(run) else hashlib.sha256(os.path.abspath(run).encode()).hexdigest()[:8]


def preferred_index(run: Path) -> int:
    """The index a run folder asks for first: stable (a hash of its absolute path), never 0."""
    digest = hashlib.sha256(os.path.abspath(run).encode()).digest()
    return int.from_bytes(digest[:4], "big") % MAX_INDEX + 1


def _recorded(run: Path) -> int | None:
    try:
        value = int((run / INDEX_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if 1 <= value <= MAX_INDEX else None


def _holder(k: int) -> Path | None:
    """The run folder holding index k, or None when the index is free (no claim, or a stale one)."""
    try:
        target = Path(os.readlink(REGISTRY / f"index-{k}"))
    except OSError:
        return None
    return target if _recorded(target) == k else None


def lab_index(run: Path | None = None) -> int:
    """This lab's index (0 for the default run folder); claims one on first use."""
    run = Path(os.path.abspath(run or runtime_dir()))
    if is_default(run):
        return 0
    mine = _recorded(run)
    if mine is not None and _holder(mine) == run:
        return mine
    return _claim(run, mine)


def _claim(run: Path, wanted: int | None) -> int:
    from ..fsutil import file_lock

    REGISTRY.mkdir(parents=True, exist_ok=True, mode=0o755)
    with file_lock(REGISTRY / "lock"):
        start = wanted or preferred_index(run)
        for step in range(MAX_INDEX):
            k = (start - 1 + step) % MAX_INDEX + 1
            holder = _holder(k)
            if holder is not None and holder != run:
                continue
            run.mkdir(parents=True, exist_ok=True)
            (run / INDEX_FILE).write_text(f"{k}\n")
            link = REGISTRY / f"index-{k}"
            tmp = REGISTRY / f".index-{k}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(run, tmp)
            os.replace(tmp, link)  # takes over a stale claim in one step
            return k
    raise LabError(f"all {MAX_INDEX} lab indexes of this machine are taken (see {REGISTRY}); bring a lab down "
                   "or use an existing DESKGUARD_LAB_RUN")


def release(run: Path | None = None) -> None:
    """Give the index back (a full `lab down`): nothing of the lab is left that carries it."""
    from ..fsutil import file_lock

    run = Path(os.path.abspath(run or runtime_dir()))
    if is_default(run):
        return
    k = _recorded(run)
    if k is None:
        return
    if REGISTRY.is_dir():
        with file_lock(REGISTRY / "lock"):
            if _holder(k) == run:
                (REGISTRY / f"index-{k}").unlink(missing_ok=True)
    (run / INDEX_FILE).unlink(missing_ok=True)


# --- Names and ranges of lab k (pure functions: the unit tests check them for every k) ----------------------

def tag(k: int) -> str:
    return "" if k == 0 else str(k)


def bridge_name(k: int) -> str:
    return f"dglab{k}"


def second_octet(k: int) -> int:
    return FIRST_OCTET_2 + k


def bridge_mac(k: int) -> str:
    """Locally administered, outside the fleet's 02:d6:13:<k>:xx:xx (k never reaches ff)."""
    return f"02:d6:13:ff:ff:{k + 1:02x}"


def fleet_netns(k: int, n: int) -> str:
    return f"lab{tag(k)}-f{n:03d}"


def fleet_veth(k: int, n: int) -> str:
    return f"dg{tag(k)}-f{n:03d}"


def fleet_mac(k: int, n: int) -> str:
    return f"02:d6:13:{k:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"


def machine_name(k: int, host: str) -> str:
    """A lab host's machine-wide name (lab-ct1 -> lab7-ct1): nspawn's machine name, its veth and its cgroup."""
    if not host.startswith("lab-"):
        raise ValueError(f"not a lab host name: {host}")
    return f"lab{tag(k)}-{host[len('lab-'):]}"


def port_base(k: int) -> int:
    return PORT_BASE + PORT_STRIDE * k
