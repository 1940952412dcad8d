"""A GateReport as JUnit XML: one testsuite per variant, one testcase per gate row.

A failing row is a <failure> whose message is the row's reason; a row whose numbers are missing is an
<error>. A canary's rows are expected to fail, so for a canary the nightly-level outcome is a
testcase of its own ("canary caught"), failing when every gate of the canary passed. A last
testsuite "<plan>.nightly" holds the nightly's verdict, failing with its reasons.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from quantgate.gates.evaluate import GateReport


def junit_xml(report: GateReport) -> ET.ElementTree:
    root = ET.Element("testsuites", name=f"quantgate.{report.plan}")
    variants = list(dict.fromkeys(row.variant for row in report.rows))
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for variant in variants:
        rows = [row for row in report.rows if row.variant == variant]
        suite = ET.SubElement(root, "testsuite", name=f"{report.plan}.{variant}")
        counts = {"tests": 0, "failures": 0, "errors": 0}
        canary = rows[0].canary
        for row in rows:
            case = ET.SubElement(
                suite, "testcase", classname=f"{report.plan}.{variant}", name=f"{row.metric} {row.gate}"
            )
            if row.detectable is not None:  # the smallest regression it could detect (80 % power)
                properties = ET.SubElement(case, "properties")
                ET.SubElement(properties, "property", name="detectable", value=repr(row.detectable))
                ET.SubElement(properties, "property", name="detectable_basis", value=row.detectable_basis)
            ET.SubElement(case, "system-out").text = row.reason
            counts["tests"] += 1
            if row.verdict == "missing":
                ET.SubElement(case, "error", message=row.reason, type="missing")
                counts["errors"] += 1
            elif row.verdict == "fail" and not canary:
                ET.SubElement(case, "failure", message=row.reason, type="gate")
                counts["failures"] += 1
        if canary:
            caught = any(row.verdict == "fail" for row in rows)
            case = ET.SubElement(
                suite, "testcase", classname=f"{report.plan}.{variant}", name="canary caught"
            )
            counts["tests"] += 1
            if not caught:
                message = f"canary {variant} passed all {len(rows)} gate(s): the harness lost sensitivity"
                ET.SubElement(case, "failure", message=message, type="canary")
                counts["failures"] += 1
        for key, count in counts.items():
            suite.set(key, str(count))
            totals[key] += count
    # the nightly's own verdict, so that a failure no gate row shows (a canary without gates) is seen
    suite = ET.SubElement(root, "testsuite", name=f"{report.plan}.nightly", tests="1", errors="0")
    case = ET.SubElement(suite, "testcase", classname=f"{report.plan}.nightly", name="verdict")
    ET.SubElement(case, "system-out").text = "\n".join(report.reasons)
    suite.set("failures", "0" if report.passed else "1")
    if not report.passed:
        ET.SubElement(case, "failure", message="; ".join(report.reasons), type="nightly")
    totals["tests"] += 1
    totals["failures"] += 0 if report.passed else 1
    for key, count in totals.items():
        root.set(key, str(count))
    return ET.ElementTree(root)


def write_junit(report: GateReport, path: Path) -> None:
    tree = junit_xml(report)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
