"""Reports: tables, plots, Markdown and self-contained HTML of one or more runs, ablation comparison."""

from compress.report.build import ReportFiles, build_report

__all__ = ["ReportFiles", "build_report"]
