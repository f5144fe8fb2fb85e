"""Report formats: a human-readable table, JSON, and JUnit XML (for CI systems that evaluators already run).

Why three: the table is for the person at the terminal, JSON for archiving and diffing runs across releases,
JUnit XML so a regional body's CI can show conformance like any other test suite.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

from fedcheck.conformance.model import Status
from fedcheck.conformance.runner import Report

__all__ = ["FORMATS", "render", "to_json", "to_junit", "to_table"]

FORMATS: tuple[str, ...] = ("table", "json", "junit")


def to_table(report: Report, *, width: int = 72) -> str:
    rows = [("STATUS", "REQ", "CASE", "EVIDENCE")]
    for r in report.results:
        ev = r.evidence.replace("\n", " ")
        rows.append((r.status.value.upper(), "yes" if r.required else "no", r.case_id,
                     ev if len(ev) <= width else ev[: width - 1] + "…"))
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    w2 = max(len(x[2]) for x in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows]
    node = report.node
    head = f"fedcheck conformance: target {report.target}, profile {report.profile}"
    if node:
        head += f", node {node.get('state')} epoch {node.get('epoch_id')}"
    verdict = "CONFORMANT" if report.conformant else "NOT CONFORMANT"
    failing = ", ".join(r.case_id for r in report.required_failures[:10])
    tail = (f"{report.count(Status.PASS)} passed, {report.count(Status.FAIL)} failed, "
            f"{report.count(Status.SKIP)} skipped in {report.duration_s:.1f}s — {verdict}"
            + (f" (required failing: {failing})" if failing else ""))
    return "\n".join([head, "", *lines, "", tail])


def to_json(report: Report) -> str:
    doc = {
        "schema": "fedcheck-conformance-report-v1",
        "target": report.target,
        "profile": report.profile,
        "node": report.node,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.started_unix)),
        "duration_s": round(report.duration_s, 3),
        "strict": report.strict,
        "conformant": report.conformant,
        "summary": {s.value: report.count(s) for s in Status},
        "required_failures": [r.case_id for r in report.required_failures],
        "results": [r.to_dict() for r in report.results],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str)


def to_junit(report: Report) -> str:
    suite = ET.Element(
        "testsuite",
        name="fedcheck-conformance",
        tests=str(len(report.results)),
        failures=str(report.count(Status.FAIL)),
        skipped=str(report.count(Status.SKIP)),
        errors="0",
        time=f"{report.duration_s:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_unix)),
        hostname=report.target,
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("profile", report.profile), *((f"node.{k}", str(v)) for k, v in report.node.items())):
        ET.SubElement(props, "property", name=k, value=str(v))
    for r in report.results:
        tc = ET.SubElement(suite, "testcase", classname=f"conformance.{r.group}", name=r.case_id,
                           time=f"{r.duration_s:.3f}")
        if r.status is Status.FAIL:
            el = ET.SubElement(tc, "failure", message=r.evidence[:500],
                               type="required" if r.required else "optional")
            el.text = f"{r.title}\nspec: {r.spec}\n{r.evidence}"
        elif r.status is Status.SKIP:
            ET.SubElement(tc, "skipped", message=r.evidence[:500])
        out = ET.SubElement(tc, "system-out")
        out.text = f"{r.title}\nspec: {r.spec}\nrequired: {r.required}\nevidence: {r.evidence}"
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def render(report: Report, fmt: str) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return to_json(report)
    if fmt == "junit":
        return to_junit(report)
    return to_table(report)
