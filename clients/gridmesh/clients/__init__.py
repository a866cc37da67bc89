"""Python client library of gridmesh: task submission and watching, the
transactional outbox for publishers and the replica applier for subscribers."""

__all__: list[str] = []
