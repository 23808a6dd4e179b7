"""`deskguard enrolment process`: the gateways learn the laptops that enrolled, then each is onboarded over its
VPN address with the normal onboarding (every control, escrow included). Safe to run again and again from a
systemd timer or an AWX schedule: it takes only laptops in state `enrolled` (a pending one waits for `devices
approve`; an onboarded one is done), one run at a time (a lock in the site), and a laptop that cannot be reached
yet or fails stays `enrolled` for the next run (docs/enrolment.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE, DeskguardError

LOCK = Path(".deskguard") / "enrolment-process.lock"


@dataclass
class Processed:
    hostname: str
    address: str
    state: str                       # onboarded | failed | unreachable | skipped
    exit_code: int
    messages: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    gateways: str                    # pushed | none | failed
    laptops: list[Processed]
    pending: list[str]               # waiting for approval

    @property
    def exit_code(self) -> int:
        codes = [p.exit_code for p in self.laptops] + ([EXIT_HOST_FAILED] if self.gateways == "failed" else [])
        return EXIT_UNREACHABLE if EXIT_UNREACHABLE in codes else max(codes, default=EXIT_OK)


def process(site: Path, *, ssh_key: Path | None = None, luks_passphrase_file: Path | None = None,
            progress_factory=None, onboard=None, push_gateways=None) -> Outcome:
    """``luks_passphrase_file``: the installer passphrase the laptops were installed with (`installer preseed`),
    which escrow needs once to add the recovery key, as `onboard --luks-passphrase-file`.
    ``onboard`` / ``push_gateways``: the onboarding and gateway push to use (tests give their own)."""
    from ..fsutil import file_lock
    from ..onboarding.onboard import onboard as real_onboard
    from ..site import policyfile
    from ..store import Store
    from ..vpn import admin, policy

    onboard = onboard or real_onboard
    push_gateways = push_gateways or admin.push_gateways
    Store.open(site).close()   # first: a folder that is no site is told so, not that its VPN is unset
    policyfile.check(site)
    policy.settings(site)   # no VPN settings: nothing can be reached through the tunnel; said here in one line
    with file_lock(Path(site) / LOCK):
        with Store.open(site) as store:
            devices = store.list_devices()
        ready = [d for d in devices if d.state == "enrolled"]
        pending = [d.hostname for d in devices if d.state == "pending"]
        if not ready:
            return Outcome("none", [], pending)
        gateways = "none"
        if admin.gateway_hosts(site):
            result = push_gateways(site, progress=progress_factory("enrolment: gateways", 1)
                                   if progress_factory else None)
            gateways = "pushed" if result.exit_code == EXIT_OK else "failed"
            if gateways == "failed":
                # A laptop the gateway does not know cannot be reached through the tunnel: try again next run.
                return Outcome(gateways, [Processed(d.hostname, d.address, "skipped", EXIT_OK,
                                                    ["the gateway push failed"]) for d in ready], pending)
        return Outcome(gateways, [_one(site, d, ssh_key, luks_passphrase_file, onboard, progress_factory)
                                  for d in ready], pending)


def _one(site: Path, device, ssh_key, luks_passphrase_file, onboard, progress_factory) -> Processed:
    from ..onboarding.onboard import OPERATOR_NAME, OnboardRequest

    if not OPERATOR_NAME.match(device.operator or ""):
        return Processed(device.hostname, device.address, "skipped", EXIT_HOST_FAILED,
                         [f"no operator account name recorded ({device.operator or 'none'}): give the token "
                          "an --operator, or onboard it by hand with --user"])
    req = OnboardRequest(device.hostname, device.os, device.address, device.operator, ssh_user=device.ssh_user,
                         port=device.port, ssh_key=ssh_key, luks_passphrase_file=luks_passphrase_file)
    try:
        result, _facts = onboard(site, req, progress=progress_factory(f"onboard {device.hostname}", 1)
                                 if progress_factory else None)
    except DeskguardError as exc:
        unreachable = exc.exit_code == EXIT_UNREACHABLE
        return Processed(device.hostname, device.address, "unreachable" if unreachable else "failed",
                         exc.exit_code, [" ".join(str(exc).split())])
    outcome = result.hosts.get(device.hostname)
    state = "onboarded" if result.exit_code == EXIT_OK else ("unreachable" if result.exit_code == EXIT_UNREACHABLE
                                                             else "failed")
    return Processed(device.hostname, device.address, state, result.exit_code,
                     list(outcome.messages) if outcome else [])
