"""Fault-injection suite (``make faults``): each case breaks something real (a bus row, a
server, a process, an artifact) against the servers the other suites start, and asserts that
nothing accepted is lost and the work completes."""
