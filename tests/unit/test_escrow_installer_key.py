"""Issue 22 item 5 on real cryptsetup images: the installer passphrase, given once at onboarding, is replaced by
the escrowed recovery key: its keyslot is removed after the key is escrowed and proven, only when the disk still
unlocks at boot without it (a crypttab key file or a clevis TPM2 binding), and it never reaches the store."""

from __future__ import annotations

import base64
import json

import pytest
from luks_laptop import INSTALLER, LIGHT, OFFICER, Laptop, dl, keys_of, run

pytestmark = pytest.mark.unit


def onboard(store, laptop, device, **kw):
    """The escrow step of onboarding with `--luks-passphrase-file` and the role's default (retire it)."""
    return run(store, laptop, device, unlock_key=INSTALLER, retire_installer_key=True, **kw)


def fake_tpm_binding(laptop, tmp_path) -> int:
    """A keyslot with a clevis TPM2 token on it, as `clevis luks bind -d DEV tpm2 ...` leaves it (no TPM here:
    only the header matters to the retire step)."""
    secret = tmp_path / "tpm-released"
    secret.write_bytes(b"what the TPM would release")
    slot = max(laptop.slots()) + 1
    Laptop._cs("luksAddKey", "-q", *LIGHT, "--key-slot", str(slot), "--key-file", "-", str(laptop.image),
               str(secret), key=INSTALLER.encode())
    header = {"alg": "dir", "enc": "A256GCM",
              "clevis": {"pin": "tpm2", "tpm2": {"hash": "sha256", "pcr_bank": "sha256", "pcr_ids": "0,2,7"}}}
    protected = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
    token = {"type": "clevis", "keyslots": [str(slot)], "jwe": {"ciphertext": "", "encrypted_key": "", "iv": "",
                                                               "protected": protected, "tag": ""}}
    Laptop._cs("token", "import", str(laptop.image), key=json.dumps(token).encode())
    return slot


def test_onboarding_removes_the_installer_passphrase_once_the_escrowed_key_opens(store, store_bytes, laptop,
                                                                                device):
    assert laptop.opens(INSTALLER) and laptop.slots() == [0, 1]
    out = onboard(store, laptop, device)
    assert out.failed is None and out.changed
    (key,) = keys_of(store, device, states=("active",)).values()
    assert not laptop.opens(INSTALLER)                          # the installer's slot is gone
    assert laptop.opens(key) and dl.test_key(str(laptop.image), laptop.keyfile.read_bytes())
    assert laptop.slots() == [1, 2]                             # key file (boot) + escrowed recovery key
    assert "keyslot 0 (the installer passphrase) removed: the escrowed recovery key replaces it" in "; ".join(out.notes)
    assert INSTALLER.encode() not in store_bytes()             # never in the store, in any form we can see
    # ENC-003's baseline follows: the removed slot is not missed, nothing is unknown, verify is clean.
    (baseline,) = store.keyslot_baselines(device.uuid).values()
    assert len(baseline) == 2
    verify = run(store, laptop, device, mode="verify", officer_key=OFFICER)
    assert verify.enc002 == [] and verify.enc003 == []
    assert any(e.action == "luks.baseline" and "installer passphrase retired" in json.dumps(e.detail)
               for e in store.list_audit())
    # Onboarding again with the same file: the passphrase opens nothing any more, so nothing changes.
    again = onboard(store, laptop, device)
    assert not again.changed and laptop.slots() == [1, 2]


def test_a_laptop_that_boots_with_the_passphrase_keeps_it(store, tmp_path, device):
    typed = Laptop(tmp_path, keyfile=False)                     # no key file, no TPM: the operator types it
    out = onboard(store, typed, device)
    (key,) = keys_of(store, device, states=("active",)).values()
    assert typed.opens(INSTALLER) and typed.opens(key) and typed.slots() == [0, 1]
    assert any("the installer passphrase is kept: it is how this laptop unlocks at boot" in n for n in out.notes)


def test_a_tpm_binding_lets_it_go_and_stays(store, tmp_path, device):
    bound = Laptop(tmp_path, keyfile=False)
    tpm_slot = fake_tpm_binding(bound, tmp_path)
    out = onboard(store, bound, device)
    (key,) = keys_of(store, device, states=("active",)).values()
    assert not bound.opens(INSTALLER) and bound.opens(key)
    assert tpm_slot in bound.slots() and 0 not in bound.slots()  # the clevis slot and its token stay
    assert dl.luks_dump(str(bound.image))["tokens"]
    assert any("(the installer passphrase) removed" in n for n in out.notes)


def test_the_device_refuses_unless_the_escrowed_key_opens_another_slot(laptop):
    image = str(laptop.image)
    with pytest.raises(dl.LuksError, match="the escrowed key opens no keyslot but the installer passphrase's"):
        dl.retire_passphrase(image, INSTALLER.encode(), b"not the escrowed key", [laptop.keyfile.read_bytes()])
    # The installer's own passphrase as the "remaining" key opens only its own slot: refused the same way.
    with pytest.raises(dl.LuksError, match="nothing removed"):
        dl.retire_passphrase(image, INSTALLER.encode(), INSTALLER.encode(), [laptop.keyfile.read_bytes()])
    assert laptop.slots() == [0, 1] and laptop.opens(INSTALLER)


def test_without_the_policy_or_in_check_mode_nothing_is_removed(store, laptop, device):
    out = run(store, laptop, device, unlock_key=INSTALLER)      # the library's default: keep it
    assert laptop.opens(INSTALLER) and not any("installer passphrase" in n for n in out.notes)
    check = run(store, laptop, device, mode="check", unlock_key=INSTALLER, retire_installer_key=True)
    assert laptop.opens(INSTALLER)
    assert check.changed and any("would remove the installer passphrase's keyslot" in n for n in check.notes)


def test_a_laptop_escrowed_earlier_needs_the_escrowed_key_at_hand(store, laptop, device):
    run(store, laptop, device)                                  # escrowed before, with the key file
    out = onboard(store, laptop, device)                        # no fresh key, no officer key: cannot prove it
    assert laptop.opens(INSTALLER)
    assert any("the escrowed key must be at hand" in n for n in out.notes)
    done = onboard(store, laptop, device, officer_key=OFFICER)
    assert not laptop.opens(INSTALLER) and any("removed" in n for n in done.notes)
