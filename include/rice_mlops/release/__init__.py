"""The release zone (the release worker, its own broker): what it takes in and re-measures,
the image build, smoke test, push, SBOM, signing, attestation, verification and the rollout.
It holds the Docker socket, the signing key and the registry password, and imports nothing of
the compute zone (an import contract): it acts only on what it produced or can verify.
"""
