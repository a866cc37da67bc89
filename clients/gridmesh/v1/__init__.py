"""Generated from protos/gridmesh/v1 by tools/genprotos.py. Do not edit."""
