"""The pipeline's services: each consumes events, does one job, publishes the next event."""
