"""Runs the unittest suite (one shard of it) and writes a JUnit XML report.

usage: python3 tools/junit.py REPORT.xml [SHARD TOTAL]
"""

import sys
import time
import unittest
import xml.etree.ElementTree as ET


def cases(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from cases(item)
        else:
            yield item


def main():
    report = sys.argv[1]
    shard, total = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) == 4 else (1, 1)
    sys.path.insert(0, "src")
    every = sorted(cases(unittest.defaultTestLoader.discover("tests")), key=lambda c: c.id())
    mine = [case for index, case in enumerate(every) if index % total == shard - 1]
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name=f"calc-shard-{shard}", tests=str(len(mine)))
    failed = 0
    for case in mine:
        result = unittest.TestResult()
        started = time.monotonic()
        case.run(result)
        classname, _, name = case.id().rpartition(".")
        element = ET.SubElement(
            suite, "testcase", classname=classname, name=name,
            time=f"{time.monotonic() - started:.3f}",
        )
        for _, trace in result.failures + result.errors:
            failed += 1
            failure = ET.SubElement(element, "failure", message=trace.strip().splitlines()[-1])
            failure.text = trace
        for _, reason in result.skipped:
            ET.SubElement(element, "skipped", message=reason)
        print(f"{'FAIL' if result.failures or result.errors else 'ok  '} {case.id()}")
    ET.ElementTree(root).write(report, encoding="utf-8", xml_declaration=True)
    print(f"{len(mine)} tests, {failed} failed; report in {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
