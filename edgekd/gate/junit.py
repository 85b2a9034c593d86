"""The gate's result as JUnit XML, the format CI test reporters read: one testsuite, one testcase per
check, <failure> for a violation, <skipped> for a check not made (nothing measured,
not comparable, no budget, or a budget for another task metric)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from edgekd.gate.render import cells
from edgekd.gate.run import GateResult

SUITE = "edgekd gate"


def render(result: GateResult) -> str:
    checks = result.checks
    root = ET.Element("testsuites", name=SUITE, tests=str(len(checks)), failures=str(len(result.failed)),
                      errors="0", skipped=str(sum(c.skipped for c in checks)))
    suite = ET.SubElement(root, "testsuite", name=SUITE, tests=root.get("tests", ""), failures=root.get("failures", ""),
                          errors="0", skipped=root.get("skipped", ""), time="0")
    properties = ET.SubElement(suite, "properties")
    for name, value in (("candidate", str(result.candidate.path)), ("baseline", str(result.baseline.path)),
                        ("thresholds", result.thresholds.source)):
        ET.SubElement(properties, "property", name=name, value=value)
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.gate.{check.kind}", name=check.name, time="0")
        c = cells(check)
        line = (f"{check.name}: baseline {c['baseline']}, candidate {c['candidate']}, change {c['change']}, "
                f"interval {c['interval']}, threshold {c['threshold']}: {check.status}")
        if check.failed:
            ET.SubElement(case, "failure", message=line, type="BudgetViolated").text = check.detail
        elif check.skipped:
            ET.SubElement(case, "skipped", message=f"{check.status}: {check.detail}")
        ET.SubElement(case, "system-out").text = line + (f"\n{check.detail}" if check.detail else "")
    if result.warnings:
        ET.SubElement(suite, "system-err").text = "\n".join(f"warning: {w}" for w in result.warnings)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
