"""The domain core: task types and validation, queue and lease rules,
replication rules and statistics definitions. The error tree and the name
rules it shares with the clients are in ``gridmesh.common``.

Nothing in here imports gRPC, pika, kazoo, confluent-kafka, pymysql or
pyspark.
"""
