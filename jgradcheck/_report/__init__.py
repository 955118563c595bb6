"""Report records and their renderings (text, HTML, JSON, plots).

Records hold data; everything else reads them, and imports flow downwards::

    records.py        Entry, Directions, LeafResult, Settings, Timing, ReportRecord
    rule_records.py   Check, DotTest, RuleReportRecord
        │
    tables.py         Table; cells formatted once (format_number, comparison_row)
    sections.py       Section; report_sections: what a report says, in order
    rule_sections.py  rule_report_sections, rule_failure_lines
    eps_sections.py   eps_sweep_sections (what str/HTML of an EpsSweep say)
        │
    text.py  html.py  serialize.py  plot.py      renderings (take records/sections)
        │
    report.py         the public Report and RuleReport: records + renderings

Any layer may import the records; the checks build :class:`report.Report` and
:class:`report.RuleReport`. Text and HTML lay out the same sections, so they
cannot drift apart; the HTML only adds colour, symbols and folding (html.py).
"""
