"""lab.image.ssh_key_pair: the lab's client key and the fleet's host key are made by the one helper, with the
real ssh-keygen: once, as a matching pair, whatever a killed earlier run left behind."""

from __future__ import annotations

import subprocess

import pytest

from deskguard.lab import fleet, image

pytestmark = pytest.mark.unit


def test_made_once_as_a_matching_pair_despite_leftovers(tmp_path):
    key = tmp_path / "keys" / "k_ed25519"
    key.parent.mkdir()
    (tmp_path / "keys" / "k_ed25519.tmp").write_text("half a pair from a killed run")
    assert image.ssh_key_pair(key, "test-comment") == key
    pub = key.with_name("k_ed25519.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and pub.strip().endswith("test-comment")
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == pub.split()[:2]
    assert oct(key.stat().st_mode & 0o777) == oct(0o600)
    assert sorted(p.name for p in key.parent.iterdir()) == ["k_ed25519", "k_ed25519.pub"]
    first = key.read_bytes()
    image.ssh_key_pair(key, "test-comment")
    assert key.read_bytes() == first          # never replaced: hosts already trust it


def test_lab_and_fleet_keys_live_where_they_did(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(fleet, "cache_dir", lambda: tmp_path)
    assert image.lab_key() == tmp_path / "keys" / "lab_ed25519"
    assert fleet.host_key() == tmp_path / "fleet" / "ssh_host_ed25519_key"
    assert (tmp_path / "keys" / "lab_ed25519.pub").read_text().strip().endswith("deskguard-lab")
    assert (tmp_path / "fleet" / "ssh_host_ed25519_key.pub").read_text().strip().endswith("deskguard-lab-fleet")
