"""Figures (matplotlib) and the self-contained HTML report: ``build_report``."""

from petkit.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
