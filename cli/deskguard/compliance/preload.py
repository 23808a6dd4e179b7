"""Load once, before Ansible forks its workers, what judging a host needs: the compliance code, the store,
the module_utils the judges share with the laptop, and the roles' defaults.

ansible-playbook forks a worker per host and task. What its main process has loaded, every worker inherits;
what it has not, every worker loads again, for every laptop: here ~60 ms of controller CPU per host (imports
compiled from source where no bytecode cache is written, ten defaults files parsed as YAML). The
deskguard_comply action plugin calls `preload()` when it is imported, and Ansible's strategies import an
action class in the main process before they queue the first host.
"""

from __future__ import annotations

import os

# The module_utils the judges import on the controller (deskguard.site.module_utils). A name missing here
# costs speed, not correctness: tests/unit/test_comply_preload.py checks the list against a real evaluation.
MODULE_UTILS = ("deskguard_browser_policy", "deskguard_network", "deskguard_network_judges", "deskguard_usb_policy",
                "deskguard_usb_report", "deskguard_usb_windows", "deskguard_vpn_facts")


def preload() -> None:
    from ..site import module_utils
    from ..site.module_code import digests
    from ..store import Store  # noqa: F401  (opened per host by the action plugin)
    from . import collector, disk, evidence, policy  # noqa: F401
    from .evaluate import evaluate  # noqa: F401

    policy.role_defaults()
    for name in MODULE_UTILS:
        module_utils(name)
    digests(collector.CODE)   # the agent's collector files, read and hashed once
    warm_store()


NO_DEVICE = "00000000-0000-0000-0000-000000000000"


def warm_store() -> None:
    """The site store's engine made and the reads of judging a laptop compiled (escrow records, keyslot
    baselines, VPN peer, check-ins), so that each worker finds them ready (deskguard.store.core keeps one
    engine per database for the process). Reads only, for a device id nobody has."""
    from sqlalchemy.orm import configure_mappers

    from ..errors import DeskguardError
    from ..recovery.escrow import KIND_BITLOCKER, KIND_LUKS
    from ..site import site_dir
    from ..store import Store

    configure_mappers()
    try:
        with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) as store:
            for kind in (KIND_LUKS, KIND_BITLOCKER):
                store.live_secrets(NO_DEVICE, kind)
            store.keyslot_baselines(NO_DEVICE)
            store.vpn_peer(NO_DEVICE)
            store.latest_checkins([NO_DEVICE])
    except DeskguardError:
        pass   # no store (yet): judging a laptop opens it and says what is wrong
