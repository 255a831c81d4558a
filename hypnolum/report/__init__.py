"""The debrief report: ``hypnolum report RECORDING.bdf [--frames FILE] --html OUT [--pdf OUT]``.

One self-contained HTML page (and optionally a PDF) per pod session, from hostd's BDF+
recording and, when given, the light the pod showed: EEG overview, band power over time,
alpha against the light's brightness, the scene and marker timeline, gaps and their causes,
a signal-quality summary per channel and the participant's pseudonymous code (docs/report.md).
"""
