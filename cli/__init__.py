"""The click commands of visage-local, installed as ``visage_local.cli``."""
