"""Long-running jobs: start with 202 Accepted, poll the status, or stream it over SSE."""
