"""usbguard not installable (issue 5, bad input): the laptop's apt points at an empty local repository and the
usbguard package is gone, as on a laptop whose sources lack it. The role alone and the onboarding each stop
with one clear message, and nothing USB-related is half-applied: the files, the daemon's state and the udev
rule are exactly as before, and the management channel answers. (USB itself is VM-only: tests/vm/test_usb_vm.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deskguard.lab import network
from deskguard.lab.access import run_ssh as ssh
from deskguard.lab.image import lab_key

pytestmark = pytest.mark.container
NAME, HOST = "lab-ct2", "lap-ct2"
EMPTY_REPO = "/srv/deskguard-empty-repo"
# Everything the USB role would touch on a Linux laptop.
USB_STATE = ("sudo sh -c 'cd /etc/usbguard 2>/dev/null && find . -type f | sort | xargs -r sha256sum; "
             "ls -la /etc/usbguard /etc/usbguard/rules.d /etc/usbguard/IPCAccessControl.d 2>&1; "
             "cat /etc/udev/rules.d/99-deskguard-usb-read-only.rules 2>&1; ls -la /var/lib/deskguard/usb 2>&1; "
             "systemctl is-enabled usbguard 2>&1; systemctl is-active usbguard 2>&1; "
             "dpkg-query -W -f=\"\\${Status}\\n\" usbguard 2>&1; true'")


# What the fixture changes besides usbguard, and must give back exactly: apt's sources and the lists read from them.
APT_STATE = ("sudo sh -c 'for d in /etc/apt /var/lib/apt/lists; do cd $d && find . -type d | sort && "
             "find . -type f -printf \"%p %m\\n\" | sort && find . -type f -exec sha256sum {} + | sort; done 2>&1; "
             "true'")
SAVED = "/var/lib/deskguard-test-apt-saved"   # outside /etc/apt: apt reads nothing from there


@pytest.fixture(scope="module")
def laptop(lab_container):
    """lab-ct2 with usbguard removed and apt reading only an empty local repository (no route out either).
    Afterwards everything is given back (the later container tests expect lab-ct2 as the lab made it): apt's
    sources and lists moved back to their own places, and usbguard installed again from the controller's .deb
    cache (tests/container/labdebs.py; the container has no route out)."""
    import labdebs

    host = lab_container.hosts[NAME]
    apt_before = ssh(host, APT_STATE).stdout
    units_before = ssh(host, "systemctl is-enabled usbguard usbguard-dbus 2>&1; true").stdout
    r = ssh(host, f"set -e; sudo rm -rf {SAVED}; sudo mkdir -p {SAVED} {EMPTY_REPO}; "
                  "sudo dpkg --remove usbguard >/dev/null 2>&1; "
                  f"sudo touch {EMPTY_REPO}/Packages; "
                  # Each moved whole, so that it goes back whole to where it was (sources.list may be absent).
                  f"if [ -e /etc/apt/sources.list ]; then sudo mv /etc/apt/sources.list {SAVED}/; fi; "
                  f"sudo mv /etc/apt/sources.list.d /var/lib/apt/lists {SAVED}/; "
                  "sudo mkdir -p /etc/apt/sources.list.d /var/lib/apt/lists/partial; "
                  f"echo 'deb [trusted=yes] file:{EMPTY_REPO} ./' | sudo tee /etc/apt/sources.list.d/empty.list "
                  ">/dev/null; sudo apt-get -q update >/dev/null; "
                  "if apt-cache policy usbguard | grep -q 'Candidate: [^(]'; then echo installable; fi; echo prepared")
    assert r.stdout.rstrip().endswith("prepared"), r.stdout + r.stderr
    assert "installable" not in r.stdout
    yield host
    r = ssh(host, f"set -e; sudo rm -rf /etc/apt/sources.list.d /var/lib/apt/lists {EMPTY_REPO}; "
                  f"if [ -e {SAVED}/sources.list ]; then sudo mv {SAVED}/sources.list /etc/apt/; fi; "
                  f"sudo mv {SAVED}/sources.list.d /etc/apt/; sudo mv {SAVED}/lists /var/lib/apt/; "
                  f"sudo rmdir {SAVED}; echo restored")
    assert r.stdout.rstrip().endswith("restored"), r.stdout + r.stderr
    labdebs.install(host, ["usbguard"])
    assert ssh(host, APT_STATE).stdout == apt_before, "apt's sources or lists were not given back as they were"
    assert ssh(host, "systemctl is-enabled usbguard usbguard-dbus 2>&1; true").stdout == units_before


@pytest.fixture(scope="module")
def site(make_site):
    return make_site(management=network.lab_network())


def test_the_role_alone_stops_with_one_message_and_changes_nothing(laptop, site, tmp_path):
    from deskguard.lab.access import SSH_OPTS
    from deskguard.site import KIT_ROOT

    before = ssh(laptop, USB_STATE).stdout
    assert "not-installed" in before or "deinstall" in before or "config-files" in before, before
    play = tmp_path / "usb.yml"
    play.write_text(textwrap.dedent(f"""\
        - name: usb_control alone, installing its own package
          hosts: {HOST}
          gather_facts: false
          tasks:
            - name: BASE | AUDIT | Operating system facts (minimal subset)
              ansible.builtin.setup:
                gather_subset: [min]
            - name: USB | USB copy restrictions
              ansible.builtin.import_role:
                name: usb_control
              vars:
                usb_control_manage_packages: true
        """))
    inventory = tmp_path / "hosts.json"
    inventory.write_text(json.dumps({"all": {"hosts": {HOST: {
        "ansible_host": laptop.address, "ansible_user": laptop.user, "ansible_become": True,
        "ansible_ssh_private_key_file": str(lab_key()), "ansible_ssh_common_args": " ".join(SSH_OPTS)}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(KIT_ROOT / "ansible.cfg"), "DESKGUARD_SITE": str(site),
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i",
                           str(inventory), str(play)], capture_output=True, text=True,
                          env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    # apt's reason for a package it knows (usbguard's config files are left) but cannot get from any source.
    assert "usbguard could not be installed (no available installation candidate for usbguard); the laptop's USB " \
           "policy was not changed. Make the usbguard package installable, then run again." in out, out[-3000:]
    assert "USB policy validated and in force" not in out        # the policy step never ran
    assert ssh(laptop, USB_STATE).stdout == before               # nothing half-applied
    assert ssh(laptop, "echo still-managed").stdout.strip() == "still-managed"


def test_onboarding_stops_before_any_control_and_says_which_packages(laptop, site):
    from sitetools import run_deskguard

    baseline = ("sudo sh -c 'ufw status; cat /etc/default/ufw; ls /etc/dconf/db/local.d 2>&1; "
                "ls /etc/apt/apt.conf.d | grep -i deskguard; true'")
    before = ssh(laptop, USB_STATE).stdout + ssh(laptop, baseline).stdout
    proc = run_deskguard(site, "onboard", HOST, "--os", "debian", "--address", laptop.address, "--user", "tanaka",
                         "--ssh-key", str(lab_key()), "--json", timeout=600)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1, out
    message = next(m for m in out["messages"] if m.startswith("could not install"))
    packages = message.split(" on lap-ct2 (")[0].removeprefix("could not install ").split(", ")
    assert "usbguard" in packages and "(no available installation candidate for usbguard)" in message, message
    assert "nothing was configured" in message and "usb_control_enabled: false" in message, message
    assert ssh(laptop, USB_STATE).stdout + ssh(laptop, baseline).stdout == before
    assert ssh(laptop, "echo still-managed").stdout.strip() == "still-managed"
