"""The click commands of visage-local: thin wrappers over the library."""
