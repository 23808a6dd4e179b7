"""ENC-004's device side (module_utils/deskguard_tpm_bind) for real: clevis's TPM2 pin against swtpm on the
controller (tests/unit/host_tpm.py) and a LUKS2 image standing for the laptop's root (tests/unit/luks_laptop.py).
The initramfs rebuild is replaced by a recorder (its real run is the VM tier's)."""

from __future__ import annotations

import pytest

from host_tpm import needs_tpm_tools
from luks_laptop import INSTALLER, Laptop, dl, tpm_bind

pytestmark = [pytest.mark.unit, needs_tpm_tools]


@pytest.fixture
def rebuilds(tmp_path, monkeypatch):
    log = tmp_path / "update-initramfs.log"
    monkeypatch.setattr(tpm_bind, "UPDATE_INITRAMFS", ("sh", "-c", f"echo rebuilt >> {log}"))
    return log


def bind(laptop, **kw):
    return tpm_bind.act({"state": "bind", "device": str(laptop.image), "luks_uuid": laptop.uuid, **kw},
                        etc=str(laptop.etc))


def tpm_facts(laptop):
    inv = tpm_bind.act({"state": "inventory"}, lsblk_json=laptop.lsblk(), etc=str(laptop.etc))
    (dev,) = inv["devices"]
    return dev


def test_bind_replaces_the_key_file_then_converges(laptop, host_tpm, rebuilds):
    keyfile_slot = 1
    res = bind(laptop, pcr_ids=[0, 2, 7])
    assert res["changed"] and res["slot"] not in (0, keyfile_slot)
    # The binding is a clevis tpm2 token on PCRs 0,2,7 whose key the TPM gives back and which opens its slot.
    dev = tpm_facts(laptop)
    (binding,) = dev["tpm"]["bindings"]
    assert binding == {"token": res["token"], "slot": res["slot"], "pin": "tpm2", "pcr_bank": "sha256",
                       "pcr_ids": [0, 2, 7], "unseals": True}
    assert {"slot": res["slot"], "pin": "tpm2"}.items() <= {
        "slot": res["slot"], **next(ks["clevis"] for ks in dev["keyslots"] if ks["slot"] == res["slot"])}.items()
    # The key file is out of the boot path: crypttab says none, no KEYFILE_PATTERN, initramfs rebuilt, its
    # keyslot and the file gone; the installer passphrase still opens the disk.
    assert laptop.crypttab.split()[2] == "none"
    assert tpm_bind.keyfile_pattern(str(laptop.etc)) == ""
    assert rebuilds.read_text() == "rebuilt\n"
    assert not laptop.keyfile.exists() and keyfile_slot not in laptop.slots()
    assert dev["tpm"]["crypttab_keyfiles"] == [] and dev["keyfile"] is False
    assert laptop.opens(INSTALLER)
    # Second run: nothing to do, no rebuild.
    again = bind(laptop, pcr_ids=[0, 2, 7])
    assert not again["changed"] and again["done"] == [] and again["slot"] == res["slot"]
    assert rebuilds.read_text() == "rebuilt\n"


def test_a_changed_pcr_stops_the_unseal_and_a_rebind_needs_a_key_you_hold(laptop, host_tpm, rebuilds):
    first = bind(laptop)
    host_tpm.extend(2)                      # the NIC's option ROM changed: PCR 2 differs
    (binding,) = tpm_facts(laptop)["tpm"]["bindings"]
    assert binding["unseals"] is False
    # No key file any more and the TPM refuses the old binding: nothing to unlock with, nothing changed.
    before = laptop.slots()
    with pytest.raises(dl.LuksError, match="no key to unlock it for the TPM binding"):
        bind(laptop)
    assert laptop.slots() == before
    # With a key the escrow holds (here the installer's), it re-binds on today's PCRs and drops the stale one.
    res = bind(laptop, unlock_key=INSTALLER)
    assert res["changed"] and res["slot"] != first["slot"]
    (binding,) = tpm_facts(laptop)["tpm"]["bindings"]
    assert binding["slot"] == res["slot"] and binding["unseals"] is True
    assert first["slot"] not in laptop.slots() and laptop.opens(INSTALLER)


def test_other_pcrs_in_the_policy_rebind_with_the_old_binding_s_key(laptop, host_tpm, rebuilds):
    first = bind(laptop, pcr_ids=[7])
    res = bind(laptop, pcr_ids=[0, 2, 7])      # the TPM still opens the old binding: its key unlocks
    assert res["changed"] and first["slot"] not in laptop.slots()
    (binding,) = tpm_facts(laptop)["tpm"]["bindings"]
    assert binding["pcr_ids"] == [0, 2, 7] and binding["unseals"]


def test_a_failed_initramfs_rebuild_restores_crypttab_and_keeps_the_key_file(laptop, host_tpm, monkeypatch):
    monkeypatch.setattr(tpm_bind, "UPDATE_INITRAMFS", ("sh", "-c", "echo 'E: no space left' >&2; exit 1"))
    crypttab = laptop.crypttab
    with pytest.raises(dl.LuksError, match="no space left.*crypttab and conf-hook restored"):
        bind(laptop)
    assert laptop.crypttab == crypttab and tpm_bind.keyfile_pattern(str(laptop.etc)) == "/etc/keys/*.key"
    assert laptop.keyfile.exists() and dl.test_key(str(laptop.image), laptop.keyfile.read_bytes(), 1)


def test_check_mode_changes_nothing(laptop, host_tpm, rebuilds):
    digest = laptop.digest()
    res = tpm_bind.act({"state": "bind", "device": str(laptop.image), "luks_uuid": laptop.uuid},
                       check_mode=True, etc=str(laptop.etc))
    assert res["changed"] and laptop.digest() == digest and not rebuilds.exists()


def test_after_the_key_file_is_gone_the_tpm_key_unlocks_enroll_and_remove(laptop, host_tpm, rebuilds):
    bind(laptop)
    res = laptop.remote("deskguard_luks", {"state": "enroll", "device": str(laptop.image), "luks_uuid": laptop.uuid,
                                           "slot": 5, "new_key": "recovery-123"})
    assert res["changed"] and laptop.opens("recovery-123")
    fp = dl.slot_fingerprint(dl.luks_dump(str(laptop.image)), 5)
    laptop.remote("deskguard_luks", {"state": "remove", "device": str(laptop.image), "luks_uuid": laptop.uuid,
                                     "slot": 5, "fingerprint": fp})
    assert 5 not in laptop.slots()


def test_no_tpm_is_a_plain_refusal(laptop, monkeypatch):
    monkeypatch.delenv("TPM2TOOLS_TCTI", raising=False)
    monkeypatch.setattr(tpm_bind, "tpm_present", lambda: False)
    with pytest.raises(dl.LuksError, match="no TPM 2.0 on this laptop"):
        bind(laptop)


def test_a_clevis_token_s_pin_is_read_without_the_tpm(tmp_path):
    token = {"type": "clevis", "keyslots": ["3"], "jwe": {"protected": "eyJjbGV2aXMiOnsicGluIjoidGFuZyJ9fQ"}}
    assert dl.clevis_pin(token) == {"pin": "tang"}
    assert dl.clevis_pin({"type": "clevis", "jwe": {"protected": "%%%"}}) == {"pin": None}
    assert tpm_bind.bindings({"tokens": {"0": token}}) == [{"token": 0, "slot": 3, "pin": "tang"}]


def test_no_key_file_laptop_has_no_key_file_facts(tmp_path, host_tpm):
    bare = Laptop(tmp_path, keyfile=False)
    dev = tpm_facts(bare)
    assert dev["tpm"] == {"tpm_present": True, "bindings": [], "crypttab_keyfiles": [], "keyfile_pattern": ""}


# ------------------------------------------------------------------- the escrow run (controller side, ENC-004)

def test_escrow_binds_only_after_the_recovery_key_then_verify_judges_enc004(store, laptop, device, host_tpm,
                                                                              rebuilds):
    from luks_laptop import OFFICER, keys_of, run

    out = run(store, laptop, device, linux_unlock="tpm2")
    controls = out.controls(escrow_applied=out.changed)
    assert controls["ENC-002"]["state"] == "applied" and controls["ENC-004"]["state"] == "applied"
    assert laptop.calls == ["inventory", "enroll", "bind"]       # escrowed and proven, then bound
    (key,) = keys_of(store, device, states=("active",)).values()
    assert laptop.opens(key) and not laptop.keyfile.exists()
    # The clevis keyslot is the kit's own: ENC-003 neither reports nor removes it; nothing left to do.
    seen = len(laptop.calls)
    again = run(store, laptop, device, linux_unlock="tpm2")
    assert not again.changed and again.enc003 == [] and laptop.calls[seen:] == ["inventory"]
    verify = run(store, laptop, device, mode="verify", linux_unlock="tpm2")
    assert verify.controls(escrow_applied=False)["ENC-004"] == {"state": "compliant", "findings": []}
    assert verify.enc003 == []
    # A changed boot measurement: ENC-004 fails with the reason; --fix re-binds with the escrowed key.
    host_tpm.extend(2)
    failing = run(store, laptop, device, mode="verify", linux_unlock="tpm2")
    assert failing.controls(escrow_applied=False)["ENC-004"]["state"] == "noncompliant"
    assert "the TPM no longer releases the disk's key" in failing.enc004[0]
    fixed = run(store, laptop, device, linux_unlock="tpm2", officer_key=OFFICER)
    assert fixed.controls(escrow_applied=fixed.changed)["ENC-004"]["state"] == "applied", fixed.enc004
    assert run(store, laptop, device, mode="verify", linux_unlock="tpm2").enc004 == []
    assert laptop.opens(key)


def test_without_the_officer_key_a_refused_binding_is_a_finding_not_a_failure(store, laptop, device, host_tpm,
                                                                               rebuilds):
    from luks_laptop import run

    run(store, laptop, device, linux_unlock="tpm2")
    host_tpm.extend(7)
    out = run(store, laptop, device, linux_unlock="tpm2")
    assert out.failed is None and out.controls(escrow_applied=out.changed)["ENC-004"]["state"] == "noncompliant"
    assert any("binding failed" in f and "officer" in f for f in out.enc004)


def test_passphrase_policy_makes_enc004_not_applicable(store, laptop, device):
    from luks_laptop import run

    out = run(store, laptop, device, mode="verify")
    assert out.controls(escrow_applied=False)["ENC-004"]["state"] == "not_applicable"
    assert "bind" not in laptop.calls


def test_rotate_keeps_the_tpm_binding_and_unlocks_with_the_tpm_s_key(store, laptop, device, host_tpm, rebuilds):
    from luks_laptop import keys_of, run

    first = run(store, laptop, device, linux_unlock="tpm2")
    bound = tpm_facts(laptop)["tpm"]["bindings"][0]["slot"]
    out = run(store, laptop, device, mode="rotate", linux_unlock="tpm2")   # no officer key, no key file left
    assert out.failed is None and out.changed and out.enc003_done == [], out
    (key,) = keys_of(store, device, states=("active",)).values()
    assert laptop.opens(key) and bound in laptop.slots()
    assert run(store, laptop, device, mode="verify", linux_unlock="tpm2").enc004 == []
    assert first.volumes[0]["escrowed"] != out.volumes[0]["escrowed"]


def test_after_a_lock_re_onboarding_binds_again_with_the_escrowed_key(store, laptop, device, host_tpm, rebuilds):
    import deskguard_agent_linux as linux
    from luks_laptop import OFFICER, keys_of, run

    run(store, laptop, device, linux_unlock="tpm2")
    (key,) = keys_of(store, device, states=("active",)).values()
    keep = [dl.slot_fingerprint(dl.luks_dump(str(laptop.image)), s) for s in laptop.slots() if laptop_opens_slot(
        laptop, key, s)]
    volumes = {laptop.uuid: str(laptop.image)}
    linux.lock(linux.plan_lock(volumes, {laptop.uuid: keep}), etc=str(laptop.etc))   # what a lock order does
    assert tpm_facts(laptop)["tpm"]["bindings"] == [] and laptop.opens(key) and not laptop.opens(INSTALLER)
    locked = run(store, laptop, device, mode="verify", linux_unlock="tpm2")
    assert "not bound to this machine's TPM" in locked.enc004[0]
    # Re-onboarding without a key it can unlock with: a finding, nothing changed; with the officer's key: bound.
    assert run(store, laptop, device, linux_unlock="tpm2").controls(escrow_applied=False)["ENC-004"]["state"] \
        == "noncompliant"
    again = run(store, laptop, device, linux_unlock="tpm2", officer_key=OFFICER)
    assert again.controls(escrow_applied=again.changed)["ENC-004"]["state"] == "applied", again.enc004
    (binding,) = tpm_facts(laptop)["tpm"]["bindings"]
    assert binding["unseals"] and laptop.opens(key)


def laptop_opens_slot(laptop, key, slot) -> bool:
    return dl.test_key(str(laptop.image), key.encode(), slot)
