"""Offline proofs for the deploy artefacts: Dockerfile, docker-compose.yml and the k8s/ kustomizations."""
