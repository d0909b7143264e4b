"""Finetuning on a CPU with torch: the aligned testbed and harmful finetunes.

Needs the optional extra ``visage-local[train]`` (torch). The sweep never imports it.
"""
