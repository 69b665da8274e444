"""Proto package ``credit.v1``: the ``*_pb2*`` modules here are generated, never edited."""
