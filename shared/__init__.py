"""vSphere Backup Manager: the library every vbm service shares."""

__version__ = "0.1.0"
