"""Routing across deployments: balancing strategies, circuit breakers, health checks, retries, fallbacks."""
