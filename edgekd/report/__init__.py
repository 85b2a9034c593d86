"""Build reports: report.json (versioned schema) and report.md."""
