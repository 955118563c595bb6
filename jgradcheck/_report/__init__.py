"""Report records and their renderings (text, HTML, JSON, plots).

Records hold data; everything else reads them, and imports flow downwards::

    call.py           Call: how a public check was called (for save_repro)
    records.py        Entry, Directions, LeafResult, Settings, Timing, ReportRecord
    rule_records.py   Check, DotTest, RuleReportRecord
    composition_records.py, hvp_records.py   check_compositions, check_hvp
        │
    tables.py         Table; cells formatted once (format_number, comparison_row)
    sections.py       Section; report_sections: what a report says, in order
    rule_sections.py  rule_report_sections, rule_failure_lines
    eps_sections.py   eps_sweep_sections (what str/HTML of an EpsSweep say)
    composition_sections.py, hvp_sections.py   the grid and the HVP report
        │
    text.py  html.py  serialize.py  plot.py      renderings (take records/sections)
    repro_tree.py  repro.py    save_repro: inputs, options, versions, a pytest file
        │
    report.py         the public Report and RuleReport: records + renderings
    composition_report.py, hvp_report.py   CompositionReport, HvpReport

Any layer may import the records; the checks build the public reports. Text and HTML lay out the same sections, so they
cannot drift apart; the HTML only adds colour, symbols and folding (html.py).
"""
