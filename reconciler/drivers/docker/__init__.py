"""The Docker Engine driver: model store, deployment containers, endpoint gateways."""
