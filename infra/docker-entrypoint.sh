#!/bin/sh
# Entrypoint of infra/Dockerfile.
#   docker run IMAGE                       -> mixtrain --help
#   docker run IMAGE sweep run X.yaml      -> mixtrain sweep run X.yaml
#   docker run IMAGE --help / ui / ...     -> mixtrain ...
#   docker run IMAGE bash | ray start ...  -> runs the command as given (the Ray cluster
#                                             launcher starts containers with `bash`)
set -e
if [ "$#" -eq 0 ]; then
    exec mixtrain --help
fi
case "$1" in
    -*) exec mixtrain "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec mixtrain "$@"
