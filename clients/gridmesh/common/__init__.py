"""What the clients and the server share, shipped in ``gridmesh-client``:
the one error tree (``errors``), the rules for names and result paths
(``names``), conversions of protobuf's well-known types (``convert``), the
replication rules a replica applier applies (``replication``) and the one
backed-off pause of every retry loop (``backoff``).

Nothing here imports more than protobuf; the server's ``gridmesh.core``
builds its domain on these.
"""
