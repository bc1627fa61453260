"""`scripts/preflight.py`: check a recipe on the hardware it will run on, before a long run (docs/preflight.md)."""
