"""``python -m visage_local.cli``."""

from .main import main

main()
