"""A per-unit pyWATS script, as a test sequencer starts one for each tested
unit: it builds the unit's report with the real client (pywats-api), submits
it and exits (about half a second, most of it importing the client).

Usage: per_unit.py URL TOKEN SERIAL [TAG]. Exits 0 when the server took the
report. Retries and the GET cache are off, so every call is one request.
"""
import sys

from pywats import CompOp, pyWATS

url, token, serial = sys.argv[1:4]
with pyWATS(base_url=url, token=token, retry_enabled=False, enable_cache=False) as api:
    report = api.report.create_uut_report(operator="station", part_number="PN-UNIT", revision="A",
                                          serial_number=serial, operation_type=10)
    report.get_root_sequence_call().add_numeric_step(name="Voltage", value=5.0, unit="V",
                                                     comp_op=CompOp.GELE, low_limit=4.5, high_limit=5.5)
    api.report.submit_report(report)
