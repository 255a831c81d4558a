"""hypnolum pod firmware: small modules, one job each (see app.py for the wiring)."""
