# -*- coding: utf-8 -*-
"""Controller-side filter for the software_policy role: the Windows browser policies as registry values and
list keys. The logic lives in module_utils/deskguard_browser_policy.py, which also renders the Linux files and
gives the nightly posture the values to compare, so the role and the check cannot drift apart."""

from __future__ import annotations


def browser_windows_registry(settings):
    from deskguard.site import module_utils

    return module_utils("deskguard_browser_policy").windows_registry(settings)


def url_filter_problems(entries):
    """The blocklist entries the browsers refuse, each with why (Chromium's URL filter format)."""
    from deskguard.site import module_utils

    return module_utils("deskguard_browser_policy").url_filter_problems(list(entries or []))


class FilterModule:
    def filters(self):
        return {"deskguard_browser_windows_registry": browser_windows_registry,
                "deskguard_url_filter_problems": url_filter_problems}
