"""The escrow order (deskguard.recovery.escrow) against real cryptsetup on LUKS image files (tests/unit/luks_laptop.py)
and a real store."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest

from deskguard.recovery import escrow
from deskguard.store import Store, StoreError

from luks_laptop import INSTALLER, LIGHT, OFFICER, Laptop, dl, escrow_open, keys_of, run

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup not installed")]

# ----------------------------------------------------------------------------------------------- flows

def test_first_run_escrows_a_key_that_opens_the_disk_then_converges(store, laptop, device):
    out = run(store, laptop, device)
    assert out.changed and out.failed is None and not out.enc002, out
    (sid, key), = keys_of(store, device).items()
    sec = store.get_secret(sid)
    assert sec.state == "active" and sec.key_id == f"luks:{laptop.uuid}:2" and sec.verified_at
    assert laptop.opens(key) and dl.test_key(str(laptop.image), key.encode(), 2)
    assert laptop.slots() == [0, 1, 2]                 # the installer and key-file slots are untouched
    controls = out.controls(escrow_applied=out.changed)
    assert controls["ENC-002"]["state"] == "applied" and controls["ENC-001"]["state"] == "compliant"
    # Slots 0/1 use the lab's light PBKDF: a warning; the escrow slot is exempt.
    assert [w for w in controls["ENC-001"]["findings"] if "keyslot 2" in w] == []
    assert any("keyslot 0 uses weak PBKDF" in w for w in controls["ENC-001"]["findings"])

    laptop.calls.clear()
    again = run(store, laptop, device)
    assert not again.changed and laptop.calls == ["inventory"]
    assert again.controls(escrow_applied=False)["ENC-002"]["state"] == "compliant"


def test_rotate_replaces_the_key_and_the_old_one_stops_working(store, laptop, device):
    run(store, laptop, device)
    (old_id, old_key), = keys_of(store, device).items()
    out = run(store, laptop, device, mode="rotate")
    assert out.changed and out.failed is None, out
    (new_id, new_key), = keys_of(store, device).items()
    assert new_id != old_id and new_key != old_key
    assert laptop.opens(new_key) and not laptop.opens(old_key)
    old = store.get_secret(old_id)
    assert old.state == "retired" and old.ciphertext is None
    assert laptop.slots() == [0, 1, 3]


def test_rotate_without_key_file_uses_the_escrowed_key_with_the_officer_key(store, tmp_path, device):
    laptop = Laptop(tmp_path, keyfile=False)
    run(store, laptop, device, unlock_key=INSTALLER)
    (_, old_key), = keys_of(store, device).items()
    failed = run(store, laptop, device, mode="rotate")
    assert failed.failed and "no key to unlock" in failed.failed
    out = run(store, laptop, device, mode="rotate", officer_key=OFFICER)
    assert out.failed is None and out.changed
    (_, new_key), = keys_of(store, device).items()
    assert laptop.opens(new_key) and not laptop.opens(old_key) and laptop.opens(INSTALLER)


def test_verify_catches_a_key_changed_behind_the_kits_back(store, laptop, device):
    run(store, laptop, device)
    (sid, key), = keys_of(store, device).items()
    assert run(store, laptop, device, mode="verify").enc002 == []
    # Someone re-keys the recovery slot by hand (same slot number, new key).
    other = laptop.keyfile.with_name("other")
    other.write_text("someone else's key")
    Laptop._cs("luksChangeKey", "-q", *LIGHT, "--key-slot", "2", "--key-file", "-", str(laptop.image),
               str(other), key=key.encode())
    out = run(store, laptop, device, mode="verify")
    assert out.enc002 and "no longer matches" in out.enc002[0]
    assert out.controls(escrow_applied=False)["ENC-002"]["state"] == "noncompliant"
    assert store.get_secret(sid).state == "mismatch"
    assert "keyslot 2 is neither escrowed nor in the enrolment baseline" in out.enc003[0]
    # The next apply escrows a fresh key and removes the re-keyed slot: it now holds a key nobody escrowed.
    fixed = run(store, laptop, device)
    assert fixed.changed and fixed.failed is None and fixed.enc002 == [] and fixed.enc003 == []
    assert fixed.controls(escrow_applied=True)["ENC-002"]["state"] == "applied"
    assert fixed.controls(escrow_applied=True)["ENC-003"]["state"] == "applied"
    (new_id, new_key), = keys_of(store, device, states=("active",)).items()
    assert laptop.opens(new_key) and 2 not in laptop.slots()
    assert run(store, laptop, device, mode="verify").enc002 == []


def test_verify_with_the_officer_key_tests_each_key_for_real(store, laptop, device):
    run(store, laptop, device)
    laptop.calls.clear()
    out = run(store, laptop, device, mode="verify", officer_key=OFFICER)
    assert out.enc002 == [] and laptop.calls == ["inventory", "test"]


def test_check_mode_writes_nothing(store, laptop, device):
    before = laptop.digest()
    out = run(store, laptop, device, mode="check")
    assert out.changed and "would escrow" in out.notes[0]
    assert store.list_secrets(device.uuid) == [] and laptop.digest() == before


# ------------------------------------------------------------------------------------ kill -9 at each step

def _rotate_and_die(url: str, device_uuid: str, image: str, crypttab: str, lsblk: str, step: str) -> None:
    laptop = Laptop.__new__(Laptop)
    laptop.etc = Path(image).parent / "etc"          # its crypttab is the parent's file
    laptop.image, laptop.calls = Path(image), []
    laptop.lsblk = lambda: lsblk

    def hook(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    with Store(url) as store:
        req = escrow.Request(device_uuid=device_uuid, hostname="lt-1", mode="rotate", hook=hook)
        escrow.run_luks(store, OFFICER.public_key(), laptop.remote, req)
    os._exit(3)  # the hook never fired


@pytest.mark.parametrize("step", ["pending", "added", "activated", "removed"])
def test_kill_at_any_step_leaves_an_escrowed_key_that_opens(store, laptop, device, step):
    run(store, laptop, device)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_rotate_and_die, args=(store.url, device.uuid, str(laptop.image), laptop.crypttab,
                                                      laptop.lsblk(), step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    live = keys_of(store, device)
    assert any(laptop.opens(k) for k in live.values()), (step, live)
    # Every key on the disk other than the installer's and the key file's is one the store holds.
    escrowed_slots = {int(s.key_id.rsplit(":", 1)[1]) for s in store.list_secrets(device.uuid)
                      if s.state in ("pending", "active")}
    assert set(laptop.slots()) - {0, 1} <= escrowed_slots
    # And the next runs converge: a rotate finishes with exactly one active key, which opens.
    out = run(store, laptop, device, mode="rotate")
    assert out.failed is None, out.failed
    active = keys_of(store, device, states=("active",))
    assert len(active) == 1 and laptop.opens(next(iter(active.values())))


# ----------------------------------------------------------------------------------- bad input and faults

def test_no_free_keyslot_fails_safe(store, laptop, device):
    def full(module, args):
        res = laptop.remote(module, args)
        for vol in res.get("devices", []):
            vol["free_slot"] = None
        return res

    before = laptop.digest()
    out = escrow.run_luks(store, OFFICER.public_key(), full, escrow.Request(device.uuid, "lt-1"))
    assert "no free keyslot" in out.failed
    assert store.list_secrets(device.uuid) == [] and laptop.digest() == before


def test_luks1_is_reported_and_left_alone(store, tmp_path, device):
    laptop = Laptop(tmp_path, keyfile=False, luks_type="luks1")
    before = laptop.digest()
    out = run(store, laptop, device, unlock_key=INSTALLER)
    assert any("LUKS1 header" in v for v in out.enc001)
    assert any("escrow needs LUKS2" in f for f in out.enc002)
    assert out.controls(escrow_applied=False)["ENC-001"]["state"] == "noncompliant"
    assert store.list_secrets(device.uuid) == [] and laptop.digest() == before


def test_wrong_installer_passphrase_changes_nothing_and_the_pending_key_is_abandoned(store, tmp_path, device):
    laptop = Laptop(tmp_path, keyfile=False)
    before = laptop.digest()
    out = run(store, laptop, device, unlock_key="not the passphrase")
    assert "the given unlock key opens no keyslot" in out.failed and "nothing changed" in out.failed
    assert laptop.digest() == before
    (sec,) = store.list_secrets(device.uuid)
    assert sec.state == "pending"
    out = run(store, laptop, device, unlock_key=INSTALLER)
    assert out.failed is None
    states = sorted(s.state for s in store.list_secrets(device.uuid))
    assert states == ["abandoned", "active"]


def test_store_unwritable_at_escrow_time_adds_no_key(store, laptop, device, monkeypatch):
    def broken(*a, **kw):
        raise StoreError("store sqlite:///x: database or disk is full; nothing was changed")

    monkeypatch.setattr(store, "add_secret", broken)
    before = laptop.digest()
    with pytest.raises(StoreError, match="disk is full"):
        run(store, laptop, device)
    assert laptop.calls == ["inventory"] and laptop.digest() == before


def test_device_that_disappears_mid_run_fails_without_removing_anything(store, laptop, device):
    run(store, laptop, device)
    (old_id, old_key), = keys_of(store, device).items()
    saved = laptop.image.read_bytes()

    def vanishing(module, args):
        if args.get("state") == "enroll":
            laptop.image.unlink()
        return laptop.remote(module, args)

    out = escrow.run_luks(store, OFFICER.public_key(), vanishing,
                          escrow.Request(device.uuid, "lt-1", mode="rotate"))
    assert "no such device" in out.failed
    laptop.image.write_bytes(saved)
    assert laptop.opens(old_key) and store.get_secret(old_id).state == "active"


def test_the_store_file_holds_no_plaintext_key(store, store_bytes, laptop, device):
    run(store, laptop, device)
    run(store, laptop, device, mode="rotate")
    keys = [escrow_open(s) for s in store.list_secrets(device.uuid) if s.ciphertext]
    assert keys
    store.close()
    blob = store_bytes()
    assert device.uuid.encode() in blob  # the dump really holds the store's rows
    for key in keys:
        assert key.encode() not in blob and key.replace("-", "").encode() not in blob


def test_recovery_keys_are_48_random_digits():
    keys = {escrow.new_recovery_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(len(k) == 55 and k.replace("-", "").isdigit() and k.count("-") == 7 for k in keys)


# ------------------------------------------------------------------------- opt-in data volume encryption

@pytest.fixture
def data_volume(tmp_path):
    path = tmp_path / "data.img"
    path.write_bytes(b"old payroll export")
    with open(path, "r+b") as fh:
        fh.truncate(20 << 20)
    return path


def test_a_listed_data_volume_is_encrypted_with_an_escrowed_key(store, laptop, device, data_volume):
    out = run(store, laptop, device, mode="check", format_devices=(str(data_volume),))
    assert any("would encrypt" in n for n in out.notes) and b"old payroll" in data_volume.read_bytes()
    out = run(store, laptop, device, format_devices=(str(data_volume),))
    assert out.failed is None and out.changed, out
    assert b"old payroll" not in data_volume.read_bytes()
    data_uuid = dl.luks_dump(str(data_volume))["uuid"]
    (key,) = [k for sid, k in keys_of(store, device).items()
              if store.get_secret(sid).key_id == f"luks:{data_uuid}:0"]
    assert dl.test_key(str(data_volume), key.encode(), 0)
    crypttab = (laptop.etc / "crypttab").read_text()
    name = f"dg-{data_uuid[:8]}"
    assert f"{name} UUID={data_uuid} /etc/cryptsetup-keys.d/{name}.key luks,discard,nofail" in crypttab
    keyfile = laptop.etc / "cryptsetup-keys.d" / f"{name}.key"
    assert oct(keyfile.stat().st_mode & 0o777) == "0o400"
    assert dl.test_key(str(data_volume), keyfile.read_bytes(), 1)
    # Next run: it is LUKS with an escrowed key; nothing is formatted again.
    laptop.calls.clear()
    again = run(store, laptop, device, format_devices=(str(data_volume),))
    assert again.failed is None and laptop.calls == ["inventory"]


def test_a_mounted_data_volume_is_refused(store, laptop, device, data_volume, monkeypatch):
    monkeypatch.setattr(dl, "_mounted", lambda dev, lsblk_json=None: ["/srv/data"])
    before = hashlib.sha256(data_volume.read_bytes()).hexdigest()
    out = run(store, laptop, device, format_devices=(str(data_volume),))
    assert any("mounted at /srv/data" in f for f in out.enc002), out
    assert hashlib.sha256(data_volume.read_bytes()).hexdigest() == before
    assert [s.key_id for s in store.list_secrets(device.uuid)] == [f"luks:{laptop.uuid}:2"]


def test_a_missing_listed_volume_is_reported(store, laptop, device, tmp_path):
    out = run(store, laptop, device, format_devices=(str(tmp_path / "nope.img"),))
    assert any("not present" in f for f in out.enc002)
