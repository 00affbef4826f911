"""Running a fleet of stations: bulk uploads and their groups (docs/architecture.md)."""
