"""module_utils/deskguard_usb_policy: device ids, approved lists (up to 10,000 entries and beyond), rendered
USBGuard rules, daemon config and udev rule."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_usb_policy as up  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text, expected", [
    ("0951:1666", {"id": "0951:1666", "serial": None}),
    ("0951:16AB:E0D55EA573FC", {"id": "0951:16ab", "serial": "E0D55EA573FC"}),
    ("46f4:0001:A:B C", {"id": "46f4:0001", "serial": "A:B C"}),  # a serial may hold colons and inner spaces
])
def test_device_ids_that_parse(text, expected):
    assert up.parse_device(text) == expected


@pytest.mark.parametrize("text, why", [
    ("0951", "VENDOR:PRODUCT"),
    ("951:1666", "4 hex digits"),
    ("0951:166g", "4 hex digits"),
    ("*:*", "wildcards are not accepted"),
    ("0951:*", "wildcards"),
    ("0000:0001", "vendor 0000"),
    ('0951:1666:bad"quote', "without quotes"),
    ("0951:1666:back\\slash", "backslashes"),
    ("0951:1666: edge", "leading/trailing"),
    ("0951:1666:" + "x" * 127, "1-126"),
    ("0951:1666:tab\there", "printable"),
])
def test_malformed_device_ids_are_refused_with_the_expected_form(text, why):
    with pytest.raises(up.PolicyError, match="(?s)" + why.replace("*", r"\*")):
        up.parse_device(text)


def test_a_bad_entry_is_named_by_its_position():
    with pytest.raises(up.PolicyError, match=r"usb_control_approved_devices\[2\]: id '12:34'"):
        up.check_approved([{"id": "0951:1666"}, {"id": "0951:1666", "serial": "S"}, {"id": "12:34"}])
    with pytest.raises(up.PolicyError, match="must be a list"):
        up.check_approved({"id": "0951:1666"})
    with pytest.raises(up.PolicyError, match=r"\[0\] must be a mapping"):
        up.check_approved(["0951:1666"])


def test_ten_thousand_sticks_become_one_rule_per_model_quickly():
    entries = [{"id": "0951:1666", "serial": "S%05d" % i} for i in range(9999)] + [{"id": "090c:1000"}]
    start = time.monotonic()
    rules = up.render_rules("allow_listed", up.check_approved(entries), [], [])
    assert time.monotonic() - start < 2.0
    approved = [line for line in rules.splitlines() if line.startswith("allow id")]
    assert len(approved) == 2
    assert approved[0] == ('allow id 090c:1000 with-interface match-all { 08:*:* } label "deskguard: approved"')
    assert approved[1].startswith('allow id 0951:1666 serial one-of { "S00000" "S00001" ')
    assert approved[1].count('"S') == 9999


def test_more_than_the_limit_is_refused_with_advice():
    with pytest.raises(up.PolicyError, match="20001 entries.*approve a model without serials"):
        up.check_approved([{"id": "0951:1666", "serial": str(i)} for i in range(up.MAX_APPROVED + 1)])


def test_a_model_without_serial_covers_its_serials_and_duplicates_collapse():
    grouped = up.group_approved(up.check_approved([
        {"id": "0951:1666", "serial": "B"}, {"id": "0951:1666", "serial": "A"}, {"id": "0951:1666", "serial": "A"},
        {"id": "abcd:0001", "serial": "X"}, {"id": "ABCD:0001"}]))
    assert grouped == [("0951:1666", ["A", "B"]), ("abcd:0001", None)]


def _rule_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_block_mode_allows_input_hubs_and_enrolment_only():
    rules = up.render_rules("block", [{"id": "0951:1666", "serial": "S"}], ["01"], ['allow id 1d6b:0002 name "hub"'])
    assert _rule_lines(rules) == [
        'allow with-interface match-all { 03:*:* 09:*:* 01:*:* } label "deskguard: input and hubs"',
        'allow id 1d6b:0002 name "hub"',
    ]
    assert rules.startswith(up.HEADER)


def test_read_only_mode_allows_storage_only_devices():
    rules = _rule_lines(up.render_rules("read_only", [], [], []))
    assert rules[-1] == 'allow with-interface match-all { 08:*:* } label "deskguard: read-only storage"'


def test_allow_listed_single_serial_and_any_serial():
    rules = _rule_lines(up.render_rules("allow_listed", up.check_approved([
        {"id": "46f4:0001", "serial": "DGOK1"}, {"id": "090c:1000"}]), [], []))
    assert rules[1:] == [
        'allow id 090c:1000 with-interface match-all { 08:*:* } label "deskguard: approved"',
        'allow id 46f4:0001 serial "DGOK1" with-interface match-all { 08:*:* } label "deskguard: approved"',
    ]


def test_storage_class_and_bad_classes_cannot_be_allowed_generally():
    for bad in (["08"], ["1"], ["zz"], ["0e", "08"]):
        with pytest.raises(up.PolicyError, match="usb_control_allowed_classes"):
            up.render_rules("block", [], bad, [])
    with pytest.raises(up.PolicyError, match="usb_control_mode must be one of"):
        up.render_rules("permissive", [], [], [])


@pytest.mark.parametrize("rule, storage", [
    ('allow id 1d6b:0002 with-interface 09:00:00', False),
    ('allow id 46f4:0001 serial "X" with-interface 08:06:50', True),
    ('allow id 1234:0001 with-interface { 03:01:01 08:06:50 }', True),
    ('allow id 1234:0001 with-interface one-of { 08:*:* }', True),
    ('allow id 1234:0001 name "with-interface 08:06:50" with-interface 03:01:01', False),
    ('allow id 1234:0001 serial "08:06:50" with-interface 0e:01:00', False),
])
def test_storage_rules_are_recognised_without_being_fooled_by_names(rule, storage):
    assert up.is_storage_rule(rule) is storage


def test_enrolment_keeps_the_laptops_own_devices_but_no_storage():
    generated = ('allow id 1d6b:0002 serial "0000:00:04.0" with-interface 09:00:00\n'
                 'allow id 46f4:0001 serial "LEFTIN" with-interface 08:06:50\n'
                 'allow id 5986:2113 name "Integrated Camera" with-interface { 0e:01:00 0e:02:00 }\n\n')
    assert up.enrolment_rules(generated) == [
        'allow id 1d6b:0002 serial "0000:00:04.0" with-interface 09:00:00',
        'allow id 5986:2113 name "Integrated Camera" with-interface { 0e:01:00 0e:02:00 }']


def test_daemon_config_blocks_by_default_and_lets_only_root_use_ipc():
    conf = dict(line.split("=", 1) for line in up.render_daemon_conf().splitlines() if not line.startswith("#"))
    assert conf["ImplicitPolicyTarget"] == "block"
    assert conf["PresentDevicePolicy"] == "apply-policy"
    assert conf["InsertedDevicePolicy"] == "apply-policy"
    assert conf["IPCAllowedUsers"] == "root" and conf["IPCAllowedGroups"] == ""
    assert "plugdev" not in up.render_daemon_conf()


def test_udev_rule_is_one_positive_match_with_the_kernel_flag_and_no_rw():
    rule = up.render_udev_read_only("/sbin/blockdev")
    body = [line for line in rule.splitlines() if not line.startswith("#")]
    assert body[0].startswith('ACTION=="add|change", SUBSYSTEM=="block", SUBSYSTEMS=="usb"')
    assert all(line.endswith("\\") for line in body[:-1])
    assert body[-1].strip() == 'RUN+="/sbin/blockdev --setro $devnode"'
    allow = [line for line in body if "UDISKS_MOUNT_OPTIONS_ALLOW" in line][0]
    assert ",rw," not in allow and "ro" in allow.split('"')[1].split(",")
    assert "!=" not in rule  # a negated SUBSYSTEMS matched every device in the lab (parent search)


def test_list_rules_and_parser_output_normalise_alike():
    listing = '1: allow with-interface 09:00:00\n2: block id 46f4:0001 serial "X"\n'
    parsed = ('INPUT: # comment\nOUTPUT: \nINPUT: allow with-interface 09:00:00\n'
              'OUTPUT: allow with-interface 09:00:00\nINPUT: block id 46f4:0001 serial "X"\n'
              'OUTPUT: block id 46f4:0001 serial "X"\n')
    assert up.normalise_rules(listing) == up.normalise_rules(parsed) == [
        "allow with-interface 09:00:00", 'block id 46f4:0001 serial "X"']
