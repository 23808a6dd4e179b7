"""Every plain-language verdict and summary the kit prints, rendered with missing (None), zero, empty and extreme
observed values: none may say `None`, show a raw template, double a phrase or leave a cell empty.

The judges (compliance/evaluate.py, accounts.py, network.py, software.py, windows.py) are driven through
evaluate() on the Linux and the Windows posture, with each observed key in turn replaced; the escrow findings,
netcheck's verdict and evidence, the onboarding table and the report formats are rendered from those results."""

from __future__ import annotations

import re

import pytest
from test_compliance_evaluate import GOOD, POLICY, disk_ok

from deskguard.compliance import html, report, runs
from deskguard.compliance.evaluate import evaluate, host_summary
from deskguard.recovery.escrow import Outcome

pytestmark = pytest.mark.unit

# Missing, zero and extreme values of the type the collector reports (a judge may rely on the type).
ODD_VALUES = {bool: (None,), int: (None, 0, -1, 10**9), float: (None, 0.0, 1e9), str: (None, "", "x" * 300),
              list: ([],), dict: (), type(None): (None,)}
REPEATED_WORD = re.compile(r"\b(\w{2,})\s+\1\b", re.IGNORECASE)
REPEATED_PHRASE = re.compile(r"\b(\w[\w ]{4,}?) \(\1\b", re.IGNORECASE)


def problems_in(text: str) -> list[str]:
    found = []
    if re.search(r"\bNone\b", text):
        found.append("None")
    if "{{" in text or "}}" in text or "<< error" in text:
        found.append("a raw template")
    for pattern in (REPEATED_WORD, REPEATED_PHRASE):
        m = pattern.search(text)
        if m:
            found.append(f"doubled {m.group(0)!r}")
    if not text.strip():
        found.append("an empty message")
    return found


def assert_plain(texts, where: str) -> None:
    bad = [(t, p) for t in texts for p in problems_in(str(t))]
    assert not bad, f"{where}: {bad[:5]}"


def variants():
    """(label, posture): every observed key of every section with an odd value, and each section empty."""
    windows_os = {"family": "Windows", "uptime_seconds": 3600}
    for family_os in (GOOD["os"], windows_os):
        base = {**GOOD, "os": family_os}
        yield f"{family_os.get('family', 'Linux')} good", base
        for section, values in GOOD.items():
            if section == "os" or not isinstance(values, dict):
                continue
            yield f"{section} empty", {**base, section: {}}
            for key in values:
                for odd in ODD_VALUES.get(type(values[key]), (None,)):
                    yield f"{section}.{key}={odd!r:.20}", {**base, section: {**values, key: odd}}


def judged(posture, outcome=None):
    return evaluate("lt-1", posture, {}, POLICY, outcome or disk_ok())


def test_no_judge_says_none_or_doubles_a_phrase_for_any_observed_value():
    seen = 0
    for label, posture in variants():
        try:
            results = judged(posture)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            pytest.fail(f"{label}: the judge crashed on an odd observed value: {exc!r}")
        for r in results:
            seen += 1
            assert_plain(r.evidence, f"{label} {r.id} evidence")
            if r.status in ("fail", "error", "warn"):
                assert r.evidence, f"{label} {r.id}: {r.status} without a reason"
    assert seen > 1000


def test_escrow_findings_read_plainly_with_missing_values():
    out = Outcome(enc001_warnings=["/dev/vda2: keyslot 0 uses weak PBKDF pbkdf2 (cryptsetup luksConvertKey "
                                   "--pbkdf argon2id)"])
    for r in judged(GOOD, out):
        assert_plain(r.evidence, r.id)


def _run(results, state="ok"):
    summary = host_summary(results)
    rec = {"state": state, "score": summary["score"], "compliant": summary["compliant"], "message": None,
           "device_uuid": "u", "source": "live", "evidence_at": "2026-11-28T01:00:00Z",
           "results": {r.id: r.to_dict() for r in results}}
    return runs.Run({"id": "6f1c2d4e-0b7a-4a8e-9d51-3c2f7e8a1b90", "finished_at": "2026-11-28T01:00:00Z", "hosts": 1, "source": "cli",
                     "score": summary["score"]}, {"lt-1": rec})


def test_report_cells_are_never_empty_nor_none():
    worst = judged({**GOOD, "accounts": {}, "screen_lock": {"idle_delay": None}, "firewall": {}})
    run = _run(worst)
    for row in report.table_rows(run):
        for col, cell in row.items():
            assert_plain([cell], f"table {col}")
    page = html.render(run, runs.drift(None, run), [])
    text = re.sub(r"<script[^>]*>.*?</script>", "", page, flags=re.S)   # the host list's code and data: below
    text = re.sub(r"<[^>]+>", " ", text)
    assert_plain([text], "HTML report")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page, flags=re.S)
    assert cells and all(c.strip() for c in cells), "an empty cell in the HTML report"
    # The host list's words: every evidence line and message (observed/expected JSON keeps its null).
    for host in html.hosts_data(run)["hosts"]:
        words = [line for d in host[9].values() for line in d[1]] + ([host[8]] if host[8] else [])
        assert words and not [w for w in words if problems_in(w)], [w for w in words if problems_in(w)][:5]
    assert "minimum length is not set" in page and "idle-delay is not set" in page, "a missing value reads 'not set'"


def test_netcheck_verdict_and_evidence_read_plainly():
    from deskguard.compliance.netcheck import evidence, verdict

    networks = [
        {"uplink": {"interface": "veth0", "kind": "virtual", "evidence": ["listed under /sys/devices/virtual"]}},
        {"uplink": {"interface": "wlan0", "kind": "wifi", "gateway": None}, "wifi": {"ssid": "x"}, "vpn": {}},
        {"uplink": None, "call_system": {"samples": {"rtt_avg_ms": 0, "jitter_ms": None, "loss_pct": 0}}},
    ]
    for net in networks:
        lines = verdict(net, []) + evidence(net)
        assert_plain(lines, f"netcheck {net['uplink']}")


def test_the_classifier_does_not_repeat_the_kind_in_its_evidence():
    from deskguard.site import module_utils

    kind, ev = module_utils("deskguard_network").classify_link("veth0", {}, None, False, virtual=True)
    from deskguard.compliance.netcheck import KINDS, evidence

    line = evidence({"uplink": {"interface": "veth0", "kind": kind, "evidence": ev}})[0]
    assert_plain([line], "netcheck default route")
    assert line.count(KINDS["virtual"]) == 1, line


def test_onboarding_rows_and_the_other_formats_read_plainly():
    from deskguard.onboarding.onboard import summary_rows
    from deskguard.runner import CONTROL_RANK, EventCollector, PlaybookResult

    c = EventCollector()
    for i, state in enumerate(CONTROL_RANK):
        c.host("lt-1").record_control(f"TST-{i:03d}", state)
    for check in (False, True):
        for row in summary_rows(PlaybookResult("onboard.yml", 0, "successful", 1.0, c.hosts), "lt-1", check):
            assert_plain([row["state"], row["next"]], f"onboarding row {row['control']}")
    rec = _run(judged({**GOOD, "accounts": {}, "firewall": {}}, Outcome(enc001_warnings=["a weak PBKDF"])))
    assert_plain([report.to_csv(rec).replace("null", "")], "CSV")
    assert_plain([re.sub(r"<(failure|error)[^>]*>.*?</\1>", "", report.to_junit(rec), flags=re.S)], "JUnit text")
    from xml.etree import ElementTree as ET

    for el in ET.fromstring(report.to_junit(rec)).iter():
        assert_plain([el.get("message")] if el.get("message") is not None else [], f"JUnit {el.tag} message")
