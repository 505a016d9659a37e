"""Reports of a profile: figures (plots), tables, report.md/report.html (render) and the
comparison with a reference profile (compare). The commands `ridgeline report` and
`ridgeline compare` are in ridgeline.commands.

Nothing here draws or imports matplotlib at import time.
"""
