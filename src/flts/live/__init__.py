"""Live operation: rows that stations report after their upload (docs/architecture.md, rule 16)."""
