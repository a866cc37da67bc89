"""The domain core: task types and validation, queue and lease rules,
replication rules, statistics definitions and the error tree.

Nothing in here imports gRPC, pika, kazoo, confluent-kafka, pymysql or
pyspark.
"""
