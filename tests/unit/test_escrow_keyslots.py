"""ENC-003 on real cryptsetup images: the keyslot baseline recorded by the first escrow, a keyslot added behind
the kit's back reported by verify and removed by apply (or only reported when the policy says so), and the
baseline following deskguard's own rotations."""

from __future__ import annotations

import pytest

from luks_laptop import INSTALLER, LIGHT, OFFICER, Laptop, keys_of, run

pytestmark = pytest.mark.unit


def add_rogue_slot(laptop, tmp_path) -> int:
    rogue = tmp_path / "rogue"
    rogue.write_text("a key nobody escrowed")
    Laptop._cs("luksAddKey", "-q", *LIGHT, "--key-file", "-", str(laptop.image), str(rogue), key=INSTALLER.encode())
    return max(laptop.slots())


def test_first_escrow_records_every_slot_and_verify_is_clean(store, laptop, device):
    run(store, laptop, device)
    (baseline,) = store.keyslot_baselines(device.uuid).values()
    assert len(baseline) == len(laptop.slots()) == 3        # installer, key file, escrowed recovery key
    out = run(store, laptop, device, mode="verify")
    assert out.enc003 == [] and out.controls(escrow_applied=False)["ENC-003"]["state"] == "compliant"
    assert any(e.action == "luks.baseline" for e in store.list_audit())


def test_an_added_slot_fails_verify_and_apply_removes_it(store, laptop, device, tmp_path):
    run(store, laptop, device)
    before = store.keyslot_baselines(device.uuid)
    slot = add_rogue_slot(laptop, tmp_path)
    out = run(store, laptop, device, mode="verify")
    assert out.enc003 == [f"{laptop.image}: keyslot {slot} is neither escrowed nor in the enrolment baseline "
                          "(added outside deskguard)"]
    assert out.controls(escrow_applied=False)["ENC-003"]["state"] == "noncompliant"
    assert slot in laptop.slots()                            # verify changes nothing

    fixed = run(store, laptop, device)
    assert fixed.changed and fixed.enc003 == [] and slot not in laptop.slots()
    assert fixed.controls(escrow_applied=True)["ENC-003"]["state"] == "applied"
    assert store.keyslot_baselines(device.uuid) == before     # the rogue slot never entered the baseline
    (key,) = keys_of(store, device, states=("active",)).values()
    assert laptop.opens(key) and laptop.opens(INSTALLER)      # the escrowed key and the operator's still open it
    assert run(store, laptop, device, mode="verify").enc003 == []


def test_report_only_policy_leaves_the_slot_and_keeps_failing(store, laptop, device, tmp_path):
    run(store, laptop, device)
    slot = add_rogue_slot(laptop, tmp_path)
    out = run(store, laptop, device, remove_unknown_slots=False)
    assert slot in laptop.slots() and len(out.enc003) == 1
    assert out.controls(escrow_applied=out.changed)["ENC-003"]["state"] == "noncompliant"


def test_no_remaining_key_means_nothing_removed_and_a_clear_finding(store, tmp_path, device):
    headless_less = Laptop(tmp_path, keyfile=False)          # no crypttab key file, no passphrase given
    run(store, headless_less, device, unlock_key=INSTALLER)
    slot = add_rogue_slot(headless_less, tmp_path)
    out = run(store, headless_less, device)
    assert slot in headless_less.slots()
    assert "not removed" in out.enc003[0] and "no key that stays" in out.enc003[0]
    # With the officer's key the escrowed key is the one that stays.
    out = run(store, headless_less, device, officer_key=OFFICER)
    assert out.enc003 == [] and slot not in headless_less.slots()


def test_rotation_moves_the_baseline_with_the_escrowed_slot(store, laptop, device):
    run(store, laptop, device)
    run(store, laptop, device, mode="rotate", officer_key=OFFICER)
    (baseline,) = store.keyslot_baselines(device.uuid).values()
    assert len(baseline) == len(laptop.slots()) == 3
    assert run(store, laptop, device, mode="verify").enc003 == []


def test_a_device_escrowed_before_baselines_existed_is_told_and_fixed(store, laptop, device):
    run(store, laptop, device)
    with store.transaction() as s:
        s.execute(__import__("sqlalchemy").text("DELETE FROM keyslot_baselines"))
    out = run(store, laptop, device, mode="verify")
    assert out.enc003 and "no keyslot baseline recorded yet" in out.enc003[0]
    run(store, laptop, device)
    assert run(store, laptop, device, mode="verify").enc003 == []
