"""The model registry (registry.json), installed as ``visage_local.models``; fetched weights are git-ignored."""
