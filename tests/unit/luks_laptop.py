"""A LUKS2 image file standing for a laptop's root disk, for the escrow tests (test_escrow, test_escrow_keyslots).

The device side is module_utils/deskguard_tpm_bind.act (deskguard_luks's states plus the TPM binding), called in-process instead of over SSH; lsblk and
/etc/crypttab are replaced by text that says "this image backs /" and "this key file unlocks it"."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from deskguard.recovery import escrow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_luks as dl  # noqa: E402
import deskguard_tpm_bind as tpm_bind  # noqa: E402

LIGHT = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
INSTALLER = "installer passphrase 7Qx"
OFFICER = X25519PrivateKey.generate()


class Laptop:
    """One LUKS2 image standing for a laptop's root disk: slot 0 the installer passphrase, and optionally a
    crypttab key file in slot 1 (the TPM stand-in of the lab)."""

    def __init__(self, tmp: Path, keyfile: bool = True, luks_type: str = "luks2"):
        self.image = tmp / "disk.img"
        with open(self.image, "wb") as fh:
            fh.truncate(20 << 20)
        args = ["luksFormat", "-q", "--type", luks_type, *LIGHT, "--key-file", "-"]
        if luks_type == "luks2":
            args += ["--key-slot", "0"]
        self._cs(*args, str(self.image), key=INSTALLER.encode())
        self.uuid = self._cs("luksUUID", str(self.image)).stdout.decode().strip()
        self.keyfile = tmp / "root.key"
        self.etc = tmp / "etc"
        (self.etc / "cryptsetup-initramfs").mkdir(parents=True)
        self.crypttab = ""
        if keyfile:
            self.keyfile.write_bytes(os.urandom(64))
            self._cs("luksAddKey", "-q", *LIGHT, "--key-slot", "1", "--key-file", "-", str(self.image),
                     str(self.keyfile), key=INSTALLER.encode())
            self.crypttab = f"root UUID={self.uuid} {self.keyfile} luks,discard\n"
            (self.etc / "cryptsetup-initramfs" / "conf-hook").write_text('KEYFILE_PATTERN="/etc/keys/*.key"\n')
        self.calls: list[str] = []

    @property
    def crypttab(self) -> str:
        """etc/crypttab of the image's laptop (the TPM binding rewrites it)."""
        return (self.etc / "crypttab").read_text()

    @crypttab.setter
    def crypttab(self, text: str) -> None:
        (self.etc / "crypttab").write_text(text)

    @staticmethod
    def _cs(*args, key=b""):
        proc = subprocess.run(["cryptsetup", *args], input=key, capture_output=True)
        assert proc.returncode == 0, proc.stderr
        return proc

    def lsblk(self) -> str:
        return json.dumps({"blockdevices": [{
            "name": "disk.img", "path": str(self.image), "type": "disk", "fstype": "crypto_LUKS",
            "uuid": self.uuid, "mountpoints": [None],
            "children": [{"name": "root", "path": "/dev/mapper/root", "type": "crypt", "fstype": "ext4",
                          "mountpoints": ["/"]}]}]})

    def remote(self, module: str, args: dict) -> dict:
        assert module == "deskguard_luks"
        self.calls.append(args.get("state", "inventory"))
        try:
            return tpm_bind.act(args, crypttab_text=None, lsblk_json=self.lsblk(), etc=str(self.etc))
        except dl.LuksError as exc:
            raise escrow.RemoteFailed(str(exc)) from None

    def opens(self, key: str) -> bool:
        return dl.test_key(str(self.image), key.encode())

    def slots(self) -> list[int]:
        return sorted(int(s) for s in dl.luks_dump(str(self.image))["keyslots"])

    def digest(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


def run(store, laptop, device, mode="apply", **kw):
    req = escrow.Request(device_uuid=device.uuid, hostname="lt-1", mode=mode, **kw)
    return escrow.run_luks(store, OFFICER.public_key(), laptop.remote, req)


def keys_of(store, device, states=("pending", "active")):
    return {s.id: escrow_open(s) for s in store.list_secrets(device.uuid) if s.state in states}


def escrow_open(sec) -> str:
    from deskguard.recovery.keys import unseal

    return unseal(OFFICER, sec.ciphertext, sec.device_uuid, sec.kind, sec.key_id).decode()
