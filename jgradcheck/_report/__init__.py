"""Report records and their renderings (text, HTML, JSON, plots)."""
