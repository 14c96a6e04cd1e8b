#!/bin/sh
# Runs in the docker CLI container of the push_image task (docker:27-cli or the local CLI
# image): log in with credentials that arrive only as private environment variables, push the
# immutable tag and `latest`, print the pushed digest as the last line (the task's XCom).
# Environment: REGISTRY, REPOSITORY, LOCAL (this run's build), IMAGE, LATEST, CONN_ID,
# REGISTRY_USERNAME, REGISTRY_PASSWORD.
set -eu
export DOCKER_CONFIG=/tmp/docker-config  # throw-away, inside the auto-removed container
attempt=1
while :; do
  if out=$(printf '%s' "$REGISTRY_PASSWORD" | docker login --username "$REGISTRY_USERNAME" \
        --password-stdin "$REGISTRY" 2>&1); then break; fi
  case $out in
    *401*|*nauthorized*|*denied*)
      echo "push: registry $REGISTRY rejected the credentials of Airflow connection $CONN_ID" \
           "(login '$REGISTRY_USERNAME'): fix the connection's login/password" >&2
      exit 3 ;;
  esac
  if [ "$attempt" -ge 3 ]; then echo "push: registry $REGISTRY unreachable: $out" >&2; exit 1; fi
  echo "push: login attempt $attempt failed ($out); retrying" >&2
  attempt=$((attempt + 1)); sleep 5
done
# The commit tag is immutable: push it only where it is absent or already names this very
# image (same image id, so a re-run pushes nothing new); never move it. The engine pulls (this
# container has no network): the same image costs a manifest read, another one is refused.
local_id=$(docker image inspect --format '{{.Id}}' "$LOCAL")
if out=$(docker pull --quiet "$IMAGE" 2>&1); then
  remote_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")
  if [ "$remote_id" != "$local_id" ]; then
    echo "push: $IMAGE already names another image ($remote_id; this run built" \
         "$local_id); an immutable tag is never moved: push a new commit instead" >&2
    exit 4
  fi
else
  case $out in
    *"manifest unknown"*|*"not found"*) ;;
    *) echo "push: cannot read $IMAGE from $REGISTRY: $out" >&2; exit 1 ;;
  esac
fi
# Re-tag from this run's own build: a re-run pushes the same image again, even if a later
# run for the same commit has built another one under the same names since.
docker tag "$LOCAL" "$IMAGE"
docker tag "$LOCAL" "$LATEST"
docker push "$IMAGE"
docker push "$LATEST"
docker logout "$REGISTRY" >/dev/null 2>&1 || true
digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" \
         | grep "^$REPOSITORY@sha256:" | head -n 1)
[ -n "$digest" ] || { echo "push: no digest for $IMAGE after push" >&2; exit 1; }
echo "$digest"
