"""The Docker Swarm driver: deployments as replicated services, models as Docker configs,
endpoints as a gateway service behind a per-node edge service. See docs/scaling.md."""
