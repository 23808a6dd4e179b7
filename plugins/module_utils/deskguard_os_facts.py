# -*- coding: utf-8 -*-
"""What onboarding needs to know about a Linux laptop before any role runs: its OS as Ansible's facts name it
(os_family, distribution, distribution_major_version, pkg_mgr) and which of the enabled controls' packages are
missing. One small module call instead of `setup` plus a package-manager call: `setup` imports every fact
collector Ansible has (compiled from source on the laptop at each call), and the package step opens the
package cache even when everything is installed (docs/onboarding.md, "Round trips").

The names follow Ansible's distribution facts for the families the kit supports; any other family is refused
in one line rather than guessed."""

from __future__ import annotations

# os-release ID -> Ansible's `distribution` fact (ansible.module_utils.facts.system.distribution).
DISTRIBUTION_NAMES = {
    "debian": "Debian", "ubuntu": "Ubuntu", "linuxmint": "Linux Mint", "pop": "Pop!_OS",
    "rhel": "RedHat", "centos": "CentOS", "rocky": "Rocky", "almalinux": "AlmaLinux", "fedora": "Fedora",
    "ol": "OracleLinux",
}
# ID or ID_LIKE word -> Ansible's `os_family` fact, for the families the roles have tasks for.
FAMILIES = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat", "centos": "RedHat"}


class UnsupportedOS(Exception):
    pass


def os_facts(dist_id: str, like: str, version: str, pretty_name: str, which=None) -> dict:
    """Ansible-named facts from os-release's ID, ID_LIKE and VERSION_ID. Raises UnsupportedOS for a family
    the roles have no tasks for."""
    import shutil

    which = which or shutil.which
    dist_id = (dist_id or "").lower()
    family = next((FAMILIES[w] for w in [dist_id, *(like or "").lower().split()] if w in FAMILIES), None)
    if family is None:
        raise UnsupportedOS("deskguard manages Debian, Ubuntu and Red Hat family Linux; this laptop runs %s"
                            % (pretty_name or dist_id or "an unknown Linux (no /etc/os-release)"))
    if family == "Debian":
        pkg_mgr = "apt"
    else:
        pkg_mgr = next((m for m in ("dnf5", "dnf", "yum") if which(m)), "unknown")
    return {
        "os_family": family,
        "distribution": DISTRIBUTION_NAMES.get(dist_id, dist_id.capitalize()),
        "distribution_version": version or "",
        "distribution_major_version": (version or "").split(".")[0],
        "pkg_mgr": pkg_mgr,
    }


def missing_packages(family: str, names: list, run) -> list:
    """The names in `names` that are not installed. `run(argv)` returns (rc, stdout, stderr) as
    AnsibleModule.run_command does; a name the package database does not know counts as missing."""
    if not names:
        return []
    if family == "Debian":
        # One line per known package; names dpkg has never heard of are only on stderr (and rc 1).
        _rc, out, _err = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *names])
        installed = {parts[0].split(":")[0] for parts in (line.split() for line in out.splitlines())
                     if len(parts) >= 2 and parts[1].startswith("ii")}
    else:
        _rc, out, _err = run(["rpm", "-q", "--qf", "%{NAME}\\n", *names])
        installed = {line.strip() for line in out.splitlines() if line.strip() and " " not in line.strip()}
    return [n for n in names if n not in installed]
