"""Reports of a profile: figures (plots), tables, report.md/report.html (render), the
`ridgeline report` command (cli) and `ridgeline compare` (compare).

Nothing here draws or imports matplotlib at import time.
"""
