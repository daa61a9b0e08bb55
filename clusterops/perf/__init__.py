"""Performance: node acceptance figures, collectives, and throughput triage."""
