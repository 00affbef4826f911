"""Running a fleet of stations: bulk uploads and their groups, and the fleet at a glance
(docs/fleet.md)."""
