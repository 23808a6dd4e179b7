"""ENC-004 on the controller: the LUKS root bound to this machine's TPM with the policy's PCRs, and no key file
in the initramfs (disk_encryption_linux_unlock: tpm2). Part of the escrow run (deskguard.recovery.escrow), so
the binding is made only once that run has the volume's recovery key escrowed and proven, and judged from the
same inventory as ENC-001..003 (the nightly run makes no second call). See docs/disk-encryption.md.
"""

from __future__ import annotations

from ..errors import DeskguardError
from .keys import unseal

UNLOCK_CHOICES = ("passphrase", "tpm2", "tpm2_pin")
TPM2_PIN_REFUSED = ("disk_encryption_linux_unlock: tpm2_pin is not offered on Debian: clevis's TPM2 pin has no "
                    "PIN (latchset/clevis issue 139) and Debian's initramfs-tools cannot use systemd-cryptenroll's "
                    "--tpm2-with-pin; use tpm2 (TPM only) or passphrase (see docs/disk-encryption.md)")


def pcr_problem(pcr_ids) -> str | None:
    """Why a policy's PCR list is refused, or None."""
    if not isinstance(pcr_ids, (list, tuple)) or not pcr_ids:
        return "disk_encryption_tpm2_pcr_ids must list at least one PCR (e.g. [0, 2, 7])"
    bad = [p for p in pcr_ids if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 23]
    if bad:
        return f"disk_encryption_tpm2_pcr_ids: {bad} are not PCR numbers (0-23)"
    if len(set(pcr_ids)) != len(pcr_ids):
        return f"disk_encryption_tpm2_pcr_ids lists a PCR twice ({list(pcr_ids)})"
    return None


def _pcrs(ids) -> str:
    return ",".join(str(i) for i in sorted(ids))


def is_root(vol: dict) -> bool:
    return "/" in (vol.get("backs") or ())


def own_slots(req, vol: dict) -> set[str]:
    """Fingerprints of the volume's clevis TPM2 keyslots when the policy binds to the TPM: the kit's own."""
    if req.linux_unlock != "tpm2":
        return set()
    return {ks["fingerprint"] for ks in vol.get("keyslots", [])
            if ks.get("fingerprint") and (ks.get("clevis") or {}).get("pin") == "tpm2"}


def findings(vol: dict, pcr_ids) -> list[str]:
    """Why this root volume does not meet ENC-004, from the inventory's "tpm" facts; [] when it does."""
    dev, want = vol["device"], sorted(pcr_ids)
    facts = vol.get("tpm")
    if facts is None:
        return [f"{dev}: no TPM facts collected (the laptop's kit predates ENC-004: run deskguard comply --fix)"]
    if facts.get("error"):
        return [f"{dev}: TPM facts not collected: {facts['error']}"]
    out = []
    bound = [b for b in facts.get("bindings") or [] if b.get("pin") == "tpm2"]
    if not facts.get("tpm_present"):
        out.append(f"{dev}: this laptop has no TPM 2.0 (/dev/tpmrm0): turn it on in the firmware")
    if not bound:
        out.append(f"{dev}: not bound to this machine's TPM")
    elif not any(b.get("pcr_ids") == want for b in bound):
        out.append(f"{dev}: bound to the TPM on PCRs {' / '.join(_pcrs(b.get('pcr_ids') or []) for b in bound)}, "
                   f"the policy wants {_pcrs(want)}")
    elif not any(b.get("unseals") for b in bound if b.get("pcr_ids") == want):
        out.append(f"{dev}: the TPM no longer releases the disk's key (a measured PCR changed since it was bound, "
                   "or the disk is in another machine): the next boot asks for the recovery key")
    for path in facts.get("crypttab_keyfiles") or []:
        out.append(f"{dev}: crypttab names the key file {path}, which the initramfs carries")
    if facts.get("keyfile_pattern"):
        out.append(f"{dev}: cryptsetup-initramfs copies key files into the initramfs "
                   f"(KEYFILE_PATTERN={facts['keyfile_pattern']})")
    return out


def _escrowed_now(run, dev: str) -> bool:
    """The escrow run left this volume with an active escrowed key and no ENC-002 finding."""
    out = run.out
    return (any(v["device"] == dev and v.get("escrowed") for v in out.volumes)
            and not any(f.startswith(dev) for f in out.enc002))


def _unlock_key(run, vol: dict, secrets: list) -> str | None:
    """The key the device unlocks with to bind: the given one, the recovery key this run escrowed, or (with the
    officer's key) the escrowed one; None lets the device use its key file or a binding the TPM still opens."""
    if run.req.unlock_key:
        return run.req.unlock_key
    if vol["luks_uuid"] in run.fresh:
        return run.fresh[vol["luks_uuid"]]
    active = [s for s in secrets if s.state == "active"]
    if run.req.officer_key is not None and active:
        return unseal(run.req.officer_key, active[0].ciphertext, active[0].device_uuid, active[0].kind,
                      active[0].key_id).decode()
    return None


def bind_root(run, vol: dict, secrets: list) -> None:
    """ENC-004 for one volume of an escrow run (run: escrow.LuksEscrow): judge it; when writing, bind it."""
    if run.req.linux_unlock != "tpm2" or not is_root(vol):
        return
    dev = vol["device"]
    problems = findings(vol, run.req.tpm_pcr_ids)
    if not problems:
        return
    if run.req.mode == "verify":
        run.out.enc004 += problems
        return
    if run.req.mode == "check":
        run.out.changed = True
        run.out.enc004_done.append(f"{dev}: would bind to the TPM on PCRs {_pcrs(run.req.tpm_pcr_ids)} and take "
                                   "the key file out of the initramfs")
        return
    if not _escrowed_now(run, dev):
        run.out.enc004 += problems + [f"{dev}: not bound: the recovery key must be escrowed and proven first"]
        return
    try:
        res = run.call({"state": "bind", "device": dev, "luks_uuid": vol["luks_uuid"],
                        "pcr_ids": sorted(run.req.tpm_pcr_ids), "unlock_key": _unlock_key(run, vol, secrets)})
    except DeskguardError as exc:
        run.out.enc004 += problems + [f"{dev}: binding failed: {exc}"]
        return
    if res.get("changed"):
        run.out.changed = True
    run.out.enc004_done += [f"{dev}: {what}" for what in res.get("done") or []] or [f"{dev}: bound to the TPM"]
