"""Secrets Ansible needs at run time (the Windows management password) as ansible-vault entries in host_vars.

Why vault: host_vars is plain YAML that admins commit to git and AWX checks out as a project; only
ciphertext may land there. The vault password is a random file in the site's `.deskguard/` (0600, never in
git, like the store and the keys); the runner hands it to every ansible-playbook it starts through
ANSIBLE_VAULT_IDENTITY_LIST under the vault id `deskguard`, and an AWX job uses a Vault credential with that
id. The secret itself never reaches argv, the environment, the store, logs or events.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

VAULT_ID = "deskguard"


def password_file(site: Path) -> Path:
    return Path(site) / ".deskguard" / "vault-deskguard.pass"


def ensure_password_file(site: Path) -> Path:
    """Create the site's vault password (once; an existing one is kept, or older entries would not open)."""
    path = password_file(site)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path


def runner_env(site: Path) -> dict:
    """Environment for ansible-playbook: the vault id and its password file, when the site has one."""
    path = password_file(site)
    return {"ANSIBLE_VAULT_IDENTITY_LIST": f"{VAULT_ID}@{path.resolve()}"} if path.exists() else {}


def encrypt(site: Path, plaintext: str):
    """A `!vault |` YAML scalar holding `plaintext`, encrypted with the site's vault password."""
    from ansible.parsing.vault import VaultLib, VaultSecret
    from ruamel.yaml.comments import TaggedScalar

    secret = VaultSecret(password_file(site).read_bytes().strip())
    ciphertext = VaultLib([(VAULT_ID, secret)]).encrypt(plaintext.encode("utf-8"), secret, vault_id=VAULT_ID)
    return TaggedScalar(value=ciphertext.decode("ascii"), style="|", tag="!vault")


def decrypt(site: Path, scalar) -> str:
    """The plaintext of a `!vault` scalar written by `encrypt` (tests and `keys`-style checks)."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = VaultSecret(password_file(site).read_bytes().strip())
    text = scalar.value if hasattr(scalar, "value") else str(scalar)
    return VaultLib([(VAULT_ID, secret)]).decrypt(text.encode("ascii")).decode("utf-8")
