"""The BitLocker escrow order, end to end through Ansible's winrm connection: the recovery password is
generated on the controller, stored sealed, added and read back by "Windows" (the responder), marked active,
and only then is encryption enabled. The responder checks the store at the moment each call arrives."""

from __future__ import annotations

import re

import pytest

from deskguard.recovery.keys import unseal
from deskguard.store import Store

pytestmark = pytest.mark.windows

PROTECTOR = "{6A1B2C3D-0000-4000-8000-00000000BEEF}"
INVENTORY = {"changed": False, "edition": {"name": "Professional", "edition_id": "Professional", "build": "22631",
                                           "bitlocker_capable": True},
             "tpm": {"present": True, "ready": True}, "findings": ["OS volume is not encrypted"],
             "volumes": [{"mount_point": "C:", "volume_type": "OperatingSystem", "protection_status": "Off",
                          "volume_status": "FullyDecrypted", "protectors": []}]}
ENC = {"disk_encryption_enabled": True, "disk_encryption_windows_method": "XtsAes256",
       "disk_encryption_windows_protector": "tpm"}


def secrets_now(site, uuid):
    with Store.open(site) as store:
        return [(s.state, s.fingerprint) for s in store.list_secrets(uuid)]


def bitlocker_states(responder):
    return [c.args.get("state") for c in responder.calls if c.short == "deskguard_bitlocker"]


def test_recovery_password_is_escrowed_and_read_back_before_encryption_starts(responder, play, enc_site):
    site, uuid, officer = enc_site
    seen = {}

    def add_recovery(call):
        seen["at_add"] = secrets_now(site, uuid)
        return {"changed": True, "protector_id": PROTECTOR, "verified": True, "mount_point": "C:"}

    def enable(call):
        seen["at_enable"] = secrets_now(site, uuid)
        return {"changed": True, "volume_status": "EncryptionInProgress", "encryption_percentage": 1.0}

    responder.answers.update({("deskguard_bitlocker", "inventory"): INVENTORY,
                              ("deskguard_bitlocker", "add_recovery"): add_recovery,
                              ("deskguard_bitlocker", "enable"): enable})
    proc = play("disk_encryption.yml", deskguard_device_uuid=uuid, **ENC)
    assert bitlocker_states(responder) == ["inventory", "add_recovery", "enable"]
    assert seen["at_add"] == [("pending", None)]            # stored before Windows saw it
    assert seen["at_enable"] == [("active", PROTECTOR)]     # read back before encryption starts
    # What Windows received is exactly what the officer can unseal, in BitLocker's format.
    (sent,) = [c.args["recovery_password"] for c in responder.calls if c.args.get("state") == "add_recovery"]
    with Store.open(site) as store:
        (sec,) = store.list_secrets(uuid)
    assert unseal(officer, sec.ciphertext, uuid, sec.kind, sec.key_id).decode() == sent
    groups = sent.split("-")
    assert len(groups) == 8 and all(re.fullmatch(r"\d{6}", g) and int(g) % 11 == 0 and int(g) < 720896
                                    for g in groups)
    assert sent not in proc.stdout + proc.stderr


def test_no_read_back_means_no_encryption(responder, play, enc_site):
    site, uuid, _ = enc_site
    responder.answers.update({("deskguard_bitlocker", "inventory"): INVENTORY,
                              ("deskguard_bitlocker", "add_recovery"): {"changed": True, "protector_id": PROTECTOR,
                                                                        "verified": False}})
    proc = play("disk_encryption.yml", expect_rc=2, deskguard_device_uuid=uuid, **ENC)
    assert "did not read the new recovery password back" in proc.stdout
    assert bitlocker_states(responder) == ["inventory", "add_recovery"]
    assert secrets_now(site, uuid) == [("pending", None)]    # kept: it may be on the volume


def test_an_escrowed_protector_on_the_volume_is_not_escrowed_again(responder, play, enc_site):
    site, uuid, _ = enc_site
    responder.answers.update({("deskguard_bitlocker", "inventory"): INVENTORY,
                              ("deskguard_bitlocker", "add_recovery"): {"changed": True, "protector_id": PROTECTOR,
                                                                        "verified": True}})
    play("disk_encryption.yml", deskguard_device_uuid=uuid, **ENC)
    responder.calls.clear()
    done = {**INVENTORY, "volumes": [{**INVENTORY["volumes"][0], "protection_status": "On",
                                      "volume_status": "FullyEncrypted",
                                      "protectors": [{"id": PROTECTOR, "type": "RecoveryPassword"},
                                                     {"id": "{T}", "type": "Tpm"}]}]}
    responder.answers[("deskguard_bitlocker", "inventory")] = done
    play("disk_encryption.yml", deskguard_device_uuid=uuid, **ENC)
    assert bitlocker_states(responder) == ["inventory", "enable"]
    assert secrets_now(site, uuid) == [("active", PROTECTOR)]


def test_check_mode_escrows_nothing(responder, play, enc_site):
    site, uuid, _ = enc_site
    responder.answers[("deskguard_bitlocker", "inventory")] = INVENTORY
    play("disk_encryption.yml", check=True, deskguard_device_uuid=uuid, **ENC)
    assert "add_recovery" not in bitlocker_states(responder)
    assert secrets_now(site, uuid) == []


def test_rotation_escrows_a_new_password_before_the_old_protector_goes(responder, enc_site):
    """`deskguard keys rotate` on Windows (playbooks/rotate_keys.yml): new password pending -> added and read
    back -> active -> only then the old protector removed; the old secret is retired."""
    from winplay import run_playbook

    site, uuid, officer = enc_site
    old, new = PROTECTOR, "{6A1B2C3D-0000-4000-8000-00000000CAFE}"
    responder.answers.update({("deskguard_bitlocker", "inventory"): INVENTORY,
                              ("deskguard_bitlocker", "add_recovery"): {"changed": True, "protector_id": old,
                                                                        "verified": True}})
    first = run_playbook("disk_encryption.yml", responder, {"deskguard_device_uuid": uuid, **ENC})
    assert first.returncode == 0, first.stdout[-3000:]
    responder.calls.clear()
    seen = {}

    def add_recovery(call):
        seen["at_add"] = secrets_now(site, uuid)
        return {"changed": True, "protector_id": new, "verified": True}

    def remove_protector(call):
        seen["at_remove"] = secrets_now(site, uuid)
        return {"changed": True}

    on_volume = {**INVENTORY, "volumes": [{**INVENTORY["volumes"][0], "protection_status": "On",
                                           "volume_status": "FullyEncrypted",
                                           "protectors": [{"id": old, "type": "RecoveryPassword"}]}]}
    responder.answers.update({("deskguard_bitlocker", "inventory"): on_volume,
                              ("deskguard_bitlocker", "add_recovery"): add_recovery,
                              ("deskguard_bitlocker", "remove_protector"): remove_protector})
    proc = run_playbook("../../../playbooks/rotate_keys.yml", responder,
                        {"deskguard_hosts": "win-loopback", "deskguard_os": "windows", "deskguard_device_uuid": uuid})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert bitlocker_states(responder) == ["inventory", "add_recovery", "remove_protector"]
    assert seen["at_add"] == [("active", old), ("pending", None)]
    assert seen["at_remove"] == [("active", old), ("active", new)]
    (removed,) = [c.args["protector_id"] for c in responder.calls if c.args.get("state") == "remove_protector"]
    assert removed == old
    assert secrets_now(site, uuid) == [("retired", old), ("active", new)]
