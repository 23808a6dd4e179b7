"""ENC-001..004 from the posture's `disk` section, with no second call to the laptop: LUKS (Linux) through
deskguard.recovery.escrow's read-only verification, BitLocker (Windows) through the BitLocker escrow's verification
(the escrow records name each recovery-password protector by its id) plus the OS volume's own state."""

from __future__ import annotations

from ..recovery import escrow
from .windows import family

# BitLocker protector types bound to the TPM: the enrolment's unlock method, not a key anyone holds.
TPM_TYPES = {"Tpm", "TpmPin", "TpmStartupKey", "TpmPinStartupKey"}


def verify(store, uuid: str | None, hostname: str, posture: dict, policy: dict) -> escrow.Outcome:
    if family(posture) == "Windows":
        return bitlocker(store, uuid, hostname, posture["disk"], policy)
    req = escrow.Request(device_uuid=uuid or "unregistered", hostname=hostname, mode="verify",
                         approved_ciphers=tuple(policy.get("disk_encryption_approved_ciphers") or ("aes-xts-plain64",)),
                         min_key_bits=int(policy.get("disk_encryption_min_key_bits") or 512),
                         linux_unlock=str(policy.get("disk_encryption_linux_unlock") or "passphrase"),
                         tpm_pcr_ids=tuple(policy.get("disk_encryption_tpm2_pcr_ids") or (0, 2, 7)))
    outcome = escrow.run_luks(store, None, lambda module, args: posture["disk"], req)
    outcome.module_calls = 0
    return outcome


def _no_call(module, args):
    raise escrow.RemoteFailed("the nightly run judges the collected inventory and makes no second call")


def bitlocker(store, uuid: str | None, hostname: str, inventory: dict, policy: dict) -> escrow.Outcome:
    req = escrow.Request(device_uuid=uuid or "unregistered", hostname=hostname, mode="verify")
    out = escrow.run_bitlocker(store if uuid else None, None, _no_call, req, inventory).out
    out.enc004_na = "Windows: BitLocker's TPM protector is judged with the OS volume (ENC-001)"
    edition = inventory.get("edition") or {}
    method = policy.get("disk_encryption_windows_method") or "XtsAes256"
    volumes = inventory.get("volumes") or []
    os_volume = next((v for v in volumes if v.get("volume_type") == "OperatingSystem"), None)
    if not edition.get("bitlocker_capable"):
        out.enc001.append(f"Windows {edition.get('name') or 'edition'} cannot use BitLocker (Pro, Enterprise or "
                          "Education needed)")
        return out
    if os_volume is None:
        out.enc001.append("Get-BitLockerVolume reported no OS volume")
        return out
    mount = os_volume.get("mount_point") or "C:"
    status, protection = os_volume.get("volume_status"), os_volume.get("protection_status")
    if status != "FullyEncrypted":
        out.enc001.append(f"{mount} is {status} ({os_volume.get('encryption_percentage')}% encrypted)")
    if protection != "On":
        out.enc001.append(f"{mount}: BitLocker protection is {protection} (off or suspended: the key is in the clear)")
    if status != "FullyDecrypted" and os_volume.get("encryption_method") != method:
        out.enc001.append(f"{mount} is encrypted with {os_volume.get('encryption_method')}, policy wants {method}")
    for vol in volumes:
        if vol.get("volume_type") == "FixedData" and vol.get("protection_status") != "On":
            out.enc001_warnings.append(f"data volume {vol.get('mount_point')} is not protected by BitLocker")
    escrowed = {s.fingerprint for s in (store.live_secrets(uuid, escrow.KIND_BITLOCKER) if store and uuid else [])}
    for prot in os_volume.get("protectors") or []:
        if prot.get("type") == "RecoveryPassword" and prot.get("id") not in escrowed:
            out.enc003.append(f"{mount}: recovery password protector {prot.get('id')} is not in the escrow record")
        elif prot.get("type") not in TPM_TYPES | {"RecoveryPassword"}:
            out.enc003.append(f"{mount}: {prot.get('type')} protector {prot.get('id')} is a key outside the escrow")
    for entry in out.volumes:
        entry.update(protection_status=protection, volume_status=status,
                     encryption_method=os_volume.get("encryption_method"))
    return out
