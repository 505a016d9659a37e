"""ridgeline: the roofline an accelerator really delivers, and LLM sizing from it.

Importing ridgeline touches no hardware: devices are probed only when a command
asks for them (see ridgeline.device).
"""

__version__ = "0.1.0"

SCHEMA_VERSION = 1          # layout of profile.json
METHOD_VERSION = "2026.11"  # how numbers are measured; bump when a probe's method changes
